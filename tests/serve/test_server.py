"""``paddlemix-r1 serve`` end to end: the openai client against a server on 127.0.0.1 (subprocess)."""

from __future__ import annotations

import concurrent.futures

import httpx
import openai
import pytest
from PIL import Image
from serve_helpers import API_KEY, MAX_BATCH_SIZE, MAX_IMAGES, MAX_MODEL_LEN, data_url, png_data_url, user_message

pytestmark = pytest.mark.slow  # a server subprocess per session


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=API_KEY, timeout=60, max_retries=0)


def _post(server, body: bytes | dict, key: str | None = API_KEY) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    if isinstance(body, dict):
        return httpx.post(f"{server.base_url}/v1/chat/completions", json=body, headers=headers, timeout=60)
    headers["Content-Type"] = "application/json"
    return httpx.post(f"{server.base_url}/v1/chat/completions", content=body, headers=headers, timeout=60)


def test_models_and_health(server, client):
    assert [m.id for m in client.models.list().data] == ["tiny"]
    assert client.models.retrieve("tiny").owned_by == "paddlemix_r1"
    health = httpx.get(f"{server.base_url}/health", timeout=10).json()
    assert health["status"] == "ok" and health["metrics"]["running"]


def test_greedy_answer_equals_generate(client, reference, image_root):
    prompt = "How many shapes are in the image?"
    ids, prompt_len = reference.greedy(prompt, [image_root / "noise.png"], max_tokens=12)
    for url in (data_url(image_root / "noise.png"), "noise.png", str(image_root / "noise.png")):
        r = client.chat.completions.create(model="tiny", messages=[user_message(prompt, [url])], temperature=0,
                                           max_tokens=12)
        assert r.choices[0].message.content == reference.text(ids)
        assert r.usage.prompt_tokens == prompt_len
        assert r.usage.completion_tokens == len(ids)
        assert r.usage.total_tokens == prompt_len + len(ids)
        assert r.choices[0].finish_reason == ("stop" if ids[-1] == reference.proc.eos_token_id else "length")


def test_n_returns_n_choices_and_seed_reproduces(client, image_root):
    kw = dict(model="tiny", messages=[user_message("Describe it.", [data_url(image_root / "red.png")])], n=4,
              temperature=1.0, max_tokens=6, seed=7)
    first = client.chat.completions.create(**kw)
    assert [c.index for c in first.choices] == [0, 1, 2, 3]
    texts = [c.message.content for c in first.choices]
    assert len(set(texts)) > 1  # four samples of a random model, not one answer repeated
    assert [c.message.content for c in client.chat.completions.create(**kw).choices] == texts
    assert 4 <= first.usage.completion_tokens <= 4 * 6 and first.usage.prompt_tokens > 0


def test_concurrent_requests_are_batched_and_match_lone_generate(server, client, reference, image_root):
    """8 concurrent greedy requests of different lengths, with and without images, different max_tokens:
    all succeed, some share a generate call, and each answer equals its lone generate call (left padding
    in a batch does not change a row's tokens)."""
    cases = [(f"question {i}: " + "more words " * i, [image_root / ("noise.png" if i % 2 else "red.png")] * (i % 3 > 0),
              4 + i % 4) for i in range(8)]
    before = server.metrics()

    def ask(case):
        prompt, images, max_tokens = case
        return client.chat.completions.create(
            model="tiny", messages=[user_message(prompt, [data_url(p) for p in images])], temperature=0,
            max_tokens=max_tokens)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(ask, cases))
    after = server.metrics()
    assert after["requests"] - before["requests"] == 8
    batched = {int(k): v - before["batch_sizes"].get(k, 0) for k, v in after["batch_sizes"].items()}
    assert any(size > 1 and count > 0 for size, count in batched.items()), batched
    assert "request(s)" in server.log.read_text()  # the per-batch log line
    for (prompt, images, max_tokens), answer in zip(cases, answers):
        ids, prompt_len = reference.greedy(prompt, images, max_tokens)
        assert answer.choices[0].message.content == reference.text(ids), prompt
        assert answer.usage.completion_tokens == len(ids)
        assert answer.usage.prompt_tokens == prompt_len


def test_stop_strings_and_length(client, reference):
    eos = reference.proc.eos_token_id
    prompts = ["Count the shapes.", "What colour is it?", "Where is the box?", "Answer briefly."]
    refs = {p: reference.greedy(p, [], max_tokens=10)[0] for p in prompts}
    for prompt, ids in refs.items():  # finish_reason: "stop" at eos, "length" at max_tokens
        r = client.chat.completions.create(model="tiny", messages=[user_message(prompt)], temperature=0, max_tokens=10)
        assert r.choices[0].message.content == reference.text(ids)
        assert r.choices[0].finish_reason == ("stop" if ids[-1] == eos else "length")
        assert r.usage.completion_tokens == len(ids)
    prompt = next(p for p, ids in refs.items() if ids[-1] != eos and len(reference.text(ids)) >= 4)
    full = reference.text(refs[prompt])
    stop = full[len(full) // 2:len(full) // 2 + 2]
    r = client.chat.completions.create(model="tiny", messages=[user_message(prompt)], temperature=0, max_tokens=10,
                                       stop=[stop, "never appears"])
    assert r.choices[0].message.content == full[:full.find(stop)]
    assert r.choices[0].finish_reason == "stop"
    assert 1 <= r.usage.completion_tokens < 10


def test_neutral_openai_defaults_are_accepted(server):
    body = {"model": "tiny", "messages": [{"role": "developer", "content": "Be brief."},
                                          {"role": "user", "content": "Hi"}],
            "max_tokens": 2, "stream": False, "presence_penalty": 0, "frequency_penalty": 0.0, "logprobs": False,
            "response_format": {"type": "text"}, "user": "someone", "metadata": {"k": "v"}, "top_k": -1}
    r = _post(server, body)
    assert r.status_code == 200, r.text
    assert r.json()["object"] == "chat.completion"


def _bad_cases(image_root):
    tiny_png = png_data_url(Image.new("RGB", (8, 8)))
    msg = [{"role": "user", "content": "Hi"}]
    return {
        "malformed JSON": (b'{"model": "tiny", "messages": [', 400, "invalid_json"),
        "not an object": (b"[1, 2]", 400, None),
        "unknown field": ({"model": "tiny", "messages": msg, "frobnicate": 1}, 400, "unknown_field"),
        "unknown message key": ({"messages": [{"role": "user", "content": "Hi", "colour": 1}]}, 400, None),
        "unsupported parameter": ({"messages": msg, "stream": True}, 400, "unsupported_parameter"),
        "bad role": ({"messages": [{"role": "tool", "content": "x"}]}, 400, None),
        "bad temperature": ({"messages": msg, "temperature": 3}, 400, None),
        "too many images": ({"messages": [user_message("x", [tiny_png] * (MAX_IMAGES + 1))]}, 400, "too_many_images"),
        "image does not decode": ({"messages": [user_message("x", ["data:image/png;base64,bm90IGFuIGltYWdl"])]},
                                  400, "invalid_image"),
        "not base64": ({"messages": [user_message("x", ["data:image/png;base64,@@@"])]}, 400, "invalid_image"),
        "broken file": ({"messages": [user_message("x", ["broken.png"])]}, 400, "invalid_image"),
        "missing file": ({"messages": [user_message("x", ["missing.png"])]}, 400, "invalid_image"),
        "path outside root": ({"messages": [user_message("x", ["../outside.png"])]}, 403, "local_path_refused"),
        "absolute path outside root": ({"messages": [user_message("x", [str(image_root.parent / "outside.png")])]},
                                       403, "local_path_refused"),
        "http url": ({"messages": [user_message("x", ["https://example.com/a.png"])]}, 400, "invalid_image_url"),
        "prompt over context": ({"messages": [user_message("word " * MAX_MODEL_LEN)]}, 400,
                                "context_length_exceeded"),
        "max_tokens over context": ({"messages": msg, "max_tokens": MAX_MODEL_LEN}, 400, "context_length_exceeded"),
        "n over max_batch_size": ({"messages": msg, "n": MAX_BATCH_SIZE + 1}, 400, None),
        "reserved token": ({"messages": [user_message("look <|image_pad|>")]}, 400, None),
        "wrong model": ({"model": "gpt-4o", "messages": msg}, 404, "model_not_found"),
        "too many stops": ({"messages": msg, "stop": ["a", "b", "c", "d", "e"]}, 400, None),
    }


def test_bad_input_gets_4xx_and_the_next_request_is_served(server, image_root):
    good = {"model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2, "temperature": 0}
    for name, (body, status, code) in _bad_cases(image_root).items():
        r = _post(server, body)
        assert r.status_code == status, (name, r.text)
        error = r.json()["error"]
        assert error["message"] and error["type"], name
        if code is not None:
            assert error["code"] == code, (name, error)
        ok = _post(server, good)
        assert ok.status_code == 200, (name, ok.text)
    assert _post(server, good, key=None).status_code == 401
    assert _post(server, good, key="wrong").json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(f"{server.base_url}/v1/models", timeout=10).status_code == 401
    unknown = _post(server, {"messages": [{"role": "user", "content": "Hi"}], "foo": 1, "bar": 2}).json()["error"]
    assert "bar" in unknown["message"] and "foo" in unknown["message"]
    assert server.metrics()["failed_batches"] == 0
