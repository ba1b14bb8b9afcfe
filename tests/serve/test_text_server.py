"""A text-only checkpoint (Qwen2ForCausalLM layout, e.g. a reasoner LM) served by the same command: greedy
answers equal a lone generate call, concurrent requests are batched, image parts are a 400."""

from __future__ import annotations

import concurrent.futures

import httpx
import pytest
from conftest import running_server

pytestmark = pytest.mark.slow  # a server subprocess per session

@pytest.fixture(scope="module")
def text_ckpt(tmp_path_factory) -> str:
    from paddlemix_r1.models import from_pretrained
    from paddlemix_r1.models.qwen2 import build_tiny_text_checkpoint

    path = str(tmp_path_factory.mktemp("serve_text"))
    build_tiny_text_checkpoint(path, seed=0)
    model = from_pretrained(path)
    model.init_weights(std=0.3, seed=1)  # varied greedy tokens (see serve_ckpt)
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def text_server(text_ckpt, tmp_path_factory):
    log = tmp_path_factory.mktemp("serve_text_log") / "server.log"
    args = ["--model_path", text_ckpt, "--served_model_name", "reasoner", "--batch_window_ms", "30",
            "--max_model_len", "256"]
    with running_server(args, log) as base:
        yield base


def _lone_greedy(path: str, prompt: str, max_tokens: int) -> str:
    from paddlemix_r1.generation.text import SamplingSettings, generate_chat
    from paddlemix_r1.models import from_pretrained
    from paddlemix_r1.processing.processor import load_processor

    settings = SamplingSettings(max_new_tokens=max_tokens, do_sample=False)
    return generate_chat(from_pretrained(path), load_processor(path), [[{"role": "user", "content": prompt}]],
                         settings)[0][0]


def test_text_checkpoint_greedy_batched_and_refuses_images(text_server, text_ckpt):
    prompts = [f"caption {i}: " + "red square " * i for i in range(6)]

    def ask(prompt: str) -> httpx.Response:
        return httpx.post(f"{text_server}/v1/chat/completions", timeout=60, json={
            "model": "reasoner", "messages": [{"role": "user", "content": prompt}], "temperature": 0,
            "max_tokens": 8})

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        replies = list(pool.map(ask, prompts))
    assert [r.status_code for r in replies] == [200] * 6
    for prompt, reply in zip(prompts, replies):
        assert reply.json()["choices"][0]["message"]["content"] == _lone_greedy(text_ckpt, prompt, 8)
    sizes = httpx.get(f"{text_server}/metrics", timeout=10).json()["batch_sizes"]
    assert any(int(k) > 1 for k in sizes), sizes
    image = {"role": "user", "content": [{"type": "text", "text": "what is it?"},
                                         {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}
    r = httpx.post(f"{text_server}/v1/chat/completions", json={"messages": [image]}, timeout=60)
    assert r.status_code == 400 and "image" in r.json()["error"]["message"]
    assert ask(prompts[0]).status_code == 200  # still serving
