"""Tokenizer cost: ours (``tokenizers`` + jinja2) vs transformers' and PaddleFormers' Qwen2 tokenizers.

Times, each backend in its own fresh subprocess (best of --reps for the steady-state numbers, which
are less disturbed by other load on a small machine than a median):
  import   the module that provides the tokenizer
  load     reading a checkpoint's tokenizer files
  encode   chat-template rendering + tokenization of a batch of prompts (first call, then best of reps)
  decode   batch decoding of B*G completions with skip_special_tokens (best of reps)

on two checkpoints built here (no hub access): the tiny one of ``paddlemix_r1.processing.tiny``
and a Qwen-sized one (151,643 BPE entries + the 14 special tokens at Qwen's ids 151643..151656,
synthetic merges beyond the tiny ones), or on ``--checkpoint DIR`` (e.g. a real Qwen2-VL download).

    python benchmarks/tokenizer.py [--batch 64] [--group 8] [--reps 20]
                                   [--paddleformers-python /path/to/python]

PaddleFormers 1.2.0 pins transformers<5.4, tokenizers 0.22 and numpy 1.26, so it is not installed
next to the project; give the interpreter of a separate environment that has it, e.g.
``python -m venv --system-site-packages /tmp/pfenv && /tmp/pfenv/bin/pip install paddleformers==1.2.0``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

QWEN_FIRST_SPECIAL_ID = 151643

QUESTIONS = [
    "Please provide the bounding box coordinate of the region this sentence describes: {}.",
    (
        "How many {} are there in the image? Output the thinking process in <think> </think> and final answer "
        "(number) in <answer> </answer> tags."
    ),
    "As shown in the figure, AB is the diameter of circle O and angle ACD = {}°. Find angle BAD.",
]
THINGS = ["the man in the red shirt", "apples", "35", "a white dog on the left", "cars", "40"]


def prompts(batch: int) -> list[list[dict]]:
    """B single-turn conversations with one image each, mixed task wording and lengths."""
    out = []
    for i in range(batch):
        question = QUESTIONS[i % len(QUESTIONS)].format(THINGS[i % len(THINGS)]) + " Be brief." * (i % 4)
        out.append([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}])
    return out


def completions(count: int) -> list[str]:
    body = "<think>The object is near the center, slightly to the left of the table.</think>"
    return [
        f"{body * (1 + i % 3)}<answer>[{i}, {2 * i}, {i + 100}, {2 * i + 80}]</answer><|im_end|>" for i in range(count)
    ]


# ---- checkpoints ------------------------------------------------------------------------------


def build_checkpoints(root: str) -> dict[str, str]:
    sys.path.insert(0, REPO)
    from paddlemix_r1.processing.tiny import build_tiny_tokenizer

    tiny = os.path.join(root, "tiny")
    build_tiny_tokenizer(tiny)
    qwen_sized = os.path.join(root, "qwen_sized")
    build_tiny_tokenizer(qwen_sized)
    enlarge_to_qwen_size(qwen_sized)
    return {"tiny": tiny, "qwen_sized": qwen_sized}


def enlarge_to_qwen_size(path: str) -> None:
    """Grow the BPE of a tiny checkpoint to Qwen2's 151,643 entries and move the special tokens
    to Qwen's ids. The added merges join existing tokens in a fixed pseudo-random order: the
    vocabulary and merge table have the real sizes, so loading costs what it costs for Qwen2."""
    import numpy as np

    file = os.path.join(path, "tokenizer.json")
    with open(file, encoding="utf-8") as f:
        data = json.load(f)
    model = data["model"]
    vocab: dict[str, int] = model["vocab"]
    merges = model["merges"]
    tokens = sorted(vocab, key=vocab.get)
    rng = np.random.default_rng(0)
    as_pair = isinstance(merges[0], list)
    while len(vocab) < QWEN_FIRST_SPECIAL_ID:
        for i, j in rng.integers(0, len(tokens), size=(1 << 16, 2)).tolist():
            a, b = tokens[i], tokens[j]
            new = a + b
            if len(new) > 12 or new in vocab:
                continue
            vocab[new] = len(vocab)
            tokens.append(new)
            merges.append([a, b] if as_pair else f"{a} {b}")
            if len(vocab) == QWEN_FIRST_SPECIAL_ID:
                break
    old_to_new = {}
    for i, added in enumerate(data["added_tokens"]):
        old_to_new[str(added["id"])] = str(QWEN_FIRST_SPECIAL_ID + i)
        added["id"] = QWEN_FIRST_SPECIAL_ID + i
    with open(file, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False)
    config_file = os.path.join(path, "tokenizer_config.json")
    with open(config_file, encoding="utf-8") as f:
        config = json.load(f)
    config["added_tokens_decoder"] = {old_to_new[k]: v for k, v in config["added_tokens_decoder"].items()}
    with open(config_file, "w", encoding="utf-8") as f:
        json.dump(config, f, ensure_ascii=False, indent=2)


# ---- one backend, run in a subprocess ---------------------------------------------------------


def worker(backend: str, checkpoint: str, batch: int, group: int, reps: int) -> dict:
    t0 = time.perf_counter()
    if backend == "ours":
        from paddlemix_r1.processing.tokenizer import Tokenizer
    elif backend == "transformers":
        from transformers import AutoTokenizer
    elif backend == "paddleformers":
        from paddleformers.transformers import AutoTokenizer
    else:
        raise ValueError(f"unknown backend {backend!r}")
    t_import = time.perf_counter() - t0

    t0 = time.perf_counter()
    tok = Tokenizer.from_pretrained(checkpoint) if backend == "ours" else AutoTokenizer.from_pretrained(checkpoint)
    t_load = time.perf_counter() - t0

    conversations = prompts(batch)
    texts_out = completions(batch * group)
    if backend == "ours":

        def encode() -> list[list[int]]:
            texts = [tok.apply_chat_template(c, add_generation_prompt=True) for c in conversations]
            return tok.encode_batch(texts)

        completion_ids = tok.encode_batch(texts_out)

        def decode() -> list[str]:
            return tok.batch_decode(completion_ids, skip_special_tokens=True)
    else:

        def encode() -> list[list[int]]:
            texts = [tok.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in conversations]
            return tok(texts, add_special_tokens=False)["input_ids"]

        completion_ids = tok(texts_out, add_special_tokens=False)["input_ids"]

        def decode() -> list[str]:
            return tok.batch_decode(completion_ids, skip_special_tokens=True)

    t0 = time.perf_counter()
    ids = encode()
    t_first = time.perf_counter() - t0
    encode_times, decode_times = [], []
    for _ in range(reps):
        t0 = time.perf_counter()
        encode()
        encode_times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        decoded = decode()
        decode_times.append(time.perf_counter() - t0)
    return {
        "import_s": t_import,
        "load_s": t_load,
        "encode_first_s": t_first,
        "encode_s": min(encode_times),
        "decode_s": min(decode_times),
        "vocab": len(tok),
        # fingerprints, so the backends can be checked to agree
        "ids_sum": sum(sum(row) for row in ids),
        "decoded_chars": sum(len(t) for t in decoded),
    }


def run_worker(python: str, backend: str, checkpoint: str, args) -> dict:
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [python, os.path.abspath(__file__), "--worker", backend, "--checkpoint", checkpoint,
           "--batch", str(args.batch), "--group", str(args.group), "--reps", str(args.reps)]  # fmt: skip
    t0 = time.perf_counter()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(f"{backend} worker failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["process_s"] = wall
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64, help="prompts per batch (B)")
    parser.add_argument("--group", type=int, default=8, help="completions per prompt (G); B*G are decoded")
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--checkpoint", help="a checkpoint dir to use instead of the two built ones")
    parser.add_argument("--paddleformers-python", help="interpreter of an environment with paddleformers")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        print(json.dumps(worker(args.worker, args.checkpoint, args.batch, args.group, args.reps)))
        return

    from _harness import cpu_header

    print(cpu_header(int(os.environ.get("OMP_NUM_THREADS", len(os.sched_getaffinity(0))))))
    backends = [("ours", sys.executable), ("transformers", sys.executable)]
    if args.paddleformers_python:
        backends.append(("paddleformers", args.paddleformers_python))
    else:
        print("paddleformers: skipped (no --paddleformers-python given)")

    with tempfile.TemporaryDirectory() as root:
        checkpoints = {"given": args.checkpoint} if args.checkpoint else build_checkpoints(root)
        print(
            f"batch B={args.batch} prompts (chat template + encode), B*G={args.batch * args.group} completions decoded"
        )
        for name, path in checkpoints.items():
            results = {backend: run_worker(python, backend, path, args) for backend, python in backends}
            vocab = results["ours"]["vocab"]
            print(f"\n[{name}] vocab {vocab}")
            header = (
                f"{'backend':<14}{'import':>10}{'load':>10}{'enc first':>11}{'encode':>10}{'decode':>10}{'process':>10}"
            )
            print(header)
            for backend, r in results.items():
                print(
                    f"{backend:<14}{r['import_s'] * 1e3:>8.0f}ms{r['load_s'] * 1e3:>8.1f}ms"
                    f"{r['encode_first_s'] * 1e3:>9.2f}ms{r['encode_s'] * 1e3:>8.2f}ms"
                    f"{r['decode_s'] * 1e3:>8.2f}ms{r['process_s']:>9.2f}s"
                )
            ours = results["ours"]
            for backend, r in results.items():
                if backend == "ours":
                    continue
                agree = r["ids_sum"] == ours["ids_sum"] and r["decoded_chars"] == ours["decoded_chars"]
                print(
                    f"ours / {backend}: import {ours['import_s'] / r['import_s']:.3f}, "
                    f"load {ours['load_s'] / r['load_s']:.3f}, encode {ours['encode_s'] / r['encode_s']:.3f}, "
                    f"decode {ours['decode_s'] / r['decode_s']:.3f}; same ids and text: {agree}"
                )


if __name__ == "__main__":
    main()
