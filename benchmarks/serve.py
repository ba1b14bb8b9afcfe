"""Serving throughput: ``paddlemix-r1 serve`` at concurrency 1, 4 and 16 vs sequential ``generate`` calls.

    python benchmarks/serve.py [--requests 32] [--max_tokens 32] [--hidden 64 --layers 2]

A tiny random Qwen2.5-VL checkpoint (``build_tiny_checkpoint``; its width and depth are flags) serves
chat requests of one image + a short question, sampled at temperature 1 without a seed (so the worker
may batch them). The baseline runs the same requests one at a time through ``generation.generate`` in
this process, with the server stopped. The server runs in its own process with the same thread count;
the openai client sends ``--requests`` requests from C threads at a time. Tokens are the completion
tokens reported by ``usage`` (and counted from the completion mask on the baseline side). The settings
run in turn for ``--rounds`` rounds; each line gives medians and how many cores other processes kept
busy meanwhile (on a shared machine, trust runs near 0).
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import functools
import io
import logging
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)

from grpo_step import busy_core_seconds  # noqa: E402  (imports no paddle)

import paddlemix_r1  # noqa: E402  first: CPU runtime settings (threads, MKL dispatch) before paddle

paddlemix_r1.configure_runtime()


def images(n: int) -> list:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)) for _ in range(n)]


def data_url(image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def question(i: int) -> str:
    return f"Question {i}: how many shapes are in the picture? " + "Think step by step. " * (i % 3)


class Sequential:
    """The baseline: the requests as lone generate calls in this process (model loaded once, one warm-up)."""

    def __init__(self, ckpt: str, pictures: list, args) -> None:
        from paddlemix_r1.models import from_pretrained
        from paddlemix_r1.processing import Processor

        self.proc, self.model, self.pictures, self.args = Processor.from_pretrained(ckpt), from_pretrained(ckpt), \
            pictures, args
        self.one(0)

    def one(self, i: int) -> int:
        from paddlemix_r1.generation import generate
        from paddlemix_r1.tasks import build_conversation

        batch = self.proc([build_conversation(question(i), 1)], [[self.pictures[i % len(self.pictures)]]])
        out = generate(self.model, batch, max_new_tokens=self.args.max_tokens, do_sample=True, temperature=1.0,
                       eos_token_id=self.proc.eos_token_id, pad_token_id=self.proc.pad_token_id)
        return int(out.completion_mask.sum())

    def run(self) -> tuple[float, int, float]:
        """Seconds and completion tokens of ``args.requests`` lone calls (1 request per generate call)."""
        t0 = time.perf_counter()
        tokens = sum(self.one(i) for i in range(self.args.requests))
        return time.perf_counter() - t0, tokens, 1.0


def process_cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of a running process (Linux /proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def measured(fn, server_pid: int) -> tuple[float, int, float, float]:
    """``fn()``'s (seconds, tokens, requests per call) plus the cores other processes kept busy meanwhile."""
    busy, mine, server = busy_core_seconds(), resource.getrusage(resource.RUSAGE_SELF), process_cpu_seconds(server_pid)
    seconds, tokens, per_call = fn()
    after = resource.getrusage(resource.RUSAGE_SELF)
    own = (after.ru_utime - mine.ru_utime) + (after.ru_stime - mine.ru_stime)
    own += process_cpu_seconds(server_pid) - server
    return seconds, tokens, per_call, max(0.0, busy_core_seconds() - busy - own) / seconds


def start_server(ckpt: str, port: int, args, log_path: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "paddlemix_r1.cli", "serve", "--model_path", ckpt, "--port", str(port),
           "--served_model_name", "tiny", "--max_batch_size", str(args.max_batch_size), "--batch_window_ms",
           str(args.batch_window_ms), "--log_level", "warning"]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    with open(log_path, "wb") as log:
        server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    import httpx

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with {server.returncode}; see {log_path}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            time.sleep(0.2)  # not listening yet
    server.terminate()
    raise RuntimeError(f"the server did not come up within 120 s; see {log_path}")


def run_clients(port: int, pictures: list, concurrency: int, args) -> tuple[float, int, float]:
    """Seconds, completion tokens and mean requests per generate call of ``args.requests`` requests sent by
    ``concurrency`` threads (after one warm-up round)."""
    import httpx
    import openai

    # Something imported with paddle logs at INFO; the client would log every request.
    for name in ("httpx", "httpx2"):  # the openai client uses one or the other
        logging.getLogger(name).setLevel(logging.WARNING)
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", timeout=300, max_retries=0)
    urls = [data_url(p) for p in pictures]

    def one(i: int) -> int:
        r = client.chat.completions.create(
            model="tiny", temperature=1.0, max_tokens=args.max_tokens,
            messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": urls[i % len(urls)]}},
                                                   {"type": "text", "text": question(i)}]}])
        return r.usage.completion_tokens

    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(concurrency)))  # warm-up: one round at this concurrency
        before = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).json()
        t0 = time.perf_counter()
        tokens = sum(pool.map(one, range(args.requests)))
        seconds = time.perf_counter() - t0
    after = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).json()
    mean_batch = (after["requests"] - before["requests"]) / max(1, after["batches"] - before["batches"])
    return seconds, tokens, mean_batch


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--requests", type=int, default=32, help="measured requests per setting")
    p.add_argument("--max_tokens", type=int, default=32)
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--rounds", type=int, default=3, help="rounds over all settings, in turn; medians are printed")
    p.add_argument("--max_batch_size", type=int, default=16)
    p.add_argument("--batch_window_ms", type=float, default=5.0)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    args = p.parse_args()

    from _harness import cpu_header

    from paddlemix_r1.models import build_tiny_checkpoint

    print(cpu_header(args.threads))
    pictures = images(4)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = build_tiny_checkpoint(os.path.join(tmp, "ckpt"), family="qwen2_5_vl", seed=0, hidden=args.hidden,
                                     layers=args.layers)
        print(f"config: tiny qwen2_5_vl hidden {args.hidden} x {args.layers} layers, one 128x96 image + question per "
              f"request, {args.max_tokens} max tokens at temperature 1, {args.requests} requests per setting, "
              f"max_batch_size {args.max_batch_size}, batch window {args.batch_window_ms} ms, "
              f"{args.rounds} rounds (medians)")
        sequential = Sequential(ckpt, pictures, args)
        port = free_port()
        server = start_server(ckpt, port, args, os.path.join(tmp, "server.log"))
        settings = {"sequential generate": sequential.run}
        settings.update({f"server, concurrency {c}": functools.partial(run_clients, port, pictures, c, args)
                         for c in args.concurrency})
        runs: dict[str, list] = {name: [] for name in settings}
        try:
            for _ in range(args.rounds):
                for name, fn in settings.items():  # in turn, so a busy spell of the shared host hits all alike
                    runs[name].append(measured(fn, server.pid))
        finally:
            server.terminate()
            server.wait(timeout=30)
    base = None
    for name, rows in runs.items():
        rps = statistics.median(args.requests / r[0] for r in rows)
        tps = statistics.median(r[1] / r[0] for r in rows)
        per_call = statistics.median(r[2] for r in rows)
        others = statistics.median(r[3] for r in rows)
        base = base or rps
        print(f"{name:>24}: {rps:6.2f} requests/s  {tps:8.1f} tokens/s  {rps / base:5.2f}x sequential  "
              f"{per_call:4.1f} requests per generate call  (other processes: {others:.1f} cores busy)")


if __name__ == "__main__":
    main()
