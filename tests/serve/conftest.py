"""Fixtures of the server tests: a tiny checkpoint whose greedy answers vary, pictures under an allowed
root, and ``paddlemix-r1 serve`` running in a subprocess on a free 127.0.0.1 port."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))

from serve_helpers import API_KEY, MAX_BATCH_SIZE, MAX_IMAGES, MAX_MODEL_LEN, Reference  # noqa: E402

STARTUP_TIMEOUT_S = 90.0


@pytest.fixture(scope="session")
def serve_ckpt(tmp_path_factory) -> str:
    """A tiny Qwen2.5-VL checkpoint with N(0, 0.3) weights.

    The tiny checkpoint of the other tests (N(0, 0.02)) answers every prompt greedily with the same
    token, so an equality test could not tell one prompt's answer from another's; wider weights give
    varied tokens. (The session fixture ``tiny_ckpt`` of tests/distributed is not visible from here.)
    """
    from paddlemix_r1.models import build_tiny_checkpoint, from_pretrained

    path = str(tmp_path_factory.mktemp("serve_tiny"))
    build_tiny_checkpoint(path, family="qwen2_5_vl", seed=0)
    model = from_pretrained(path)
    model.init_weights(std=0.3, seed=1)
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def image_root(tmp_path_factory) -> Path:
    """root/noise.png, root/red.png, root/broken.png (not an image), and ../outside.png beside root."""
    base = tmp_path_factory.mktemp("serve_images")
    root = base / "root"
    root.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (80, 100, 3), dtype=np.uint8)).save(root / "noise.png")
    Image.new("RGB", (64, 48), (200, 30, 30)).save(root / "red.png")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    Image.new("RGB", (32, 32), (0, 0, 255)).save(base / "outside.png")
    return root


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(base: str) -> bool:
    """True once /health answers 200; False while nothing listens yet (the caller's deadline bounds it)."""
    try:
        return httpx.get(f"{base}/health", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


@dataclass
class Server:
    base_url: str  # http://127.0.0.1:P
    model: str
    log: Path

    def metrics(self) -> dict:
        return httpx.get(f"{self.base_url}/metrics", timeout=10).json()


@contextlib.contextmanager
def running_server(args: list[str], log: Path, env: dict[str, str] | None = None) -> Iterator[str]:
    """``paddlemix-r1 serve ARGS --host 127.0.0.1 --port P`` in a subprocess; yields its base URL once /health
    answers, and stops it afterwards (all waits bounded)."""
    port = _free_port()
    cmd = [sys.executable, "-m", "paddlemix_r1.cli", "serve", *args, "--host", "127.0.0.1", "--port", str(port)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the server exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
            if _healthy(base):
                break
            if time.monotonic() > deadline:
                pytest.fail(f"the server did not answer /health within {STARTUP_TIMEOUT_S} s:\n{log.read_text()[-4000:]}")
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="session")
def server(serve_ckpt, image_root, tmp_path_factory):
    """``paddlemix-r1 serve`` in a subprocess (the test process loads its own model for references)."""
    log = tmp_path_factory.mktemp("serve_log") / "server.log"
    args = ["--model_path", serve_ckpt, "--served_model_name", "tiny", "--max_model_len", str(MAX_MODEL_LEN),
            "--max_images", str(MAX_IMAGES), "--max_batch_size", str(MAX_BATCH_SIZE), "--allowed_root",
            str(image_root), "--api_key", API_KEY, "--batch_window_ms", "30", "--max_new_tokens", "8"]
    with running_server(args, log, env={**os.environ, "PYTHONUNBUFFERED": "1"}) as base:
        yield Server(base, "tiny", log)


@pytest.fixture(scope="session")
def reference(serve_ckpt) -> Reference:
    """The same checkpoint loaded in the test process: lone ``generate`` calls to compare against."""
    return Reference(serve_ckpt)
