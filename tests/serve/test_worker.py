"""The batching worker in-process: batched greedy == lone generate, seeds, grouping, collate."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from paddlemix_r1.serve.app import finish
from paddlemix_r1.serve.backend import ChatModel
from paddlemix_r1.serve.worker import BatchWorker, Completion, SamplingParams
from paddlemix_r1.tasks import build_conversation


@pytest.fixture(scope="module")
def chat_model(reference) -> ChatModel:
    return ChatModel(reference.model, reference.proc, "tiny", max_model_len=4096, supports_images=True)


def _run_all(worker: BatchWorker, jobs: list[tuple]) -> list[list[Completion]]:
    """Queue every job before the worker starts, so batching depends only on keys and sizes."""
    futures = [worker.submit(prompt, params) for prompt, params in jobs]
    worker.start()
    try:
        return [f.result(timeout=120) for f in futures]
    finally:
        worker.stop()


def _prompts(chat_model, image_root):
    noise, red = Image.open(image_root / "noise.png"), Image.open(image_root / "red.png")
    specs = [("short", [noise]), ("a much longer prompt that pads the others on the left", [red]),
             ("no image at all", []), ("two images", [red, noise]), ("x", [])]
    return specs, [chat_model.encode(build_conversation(t, len(ims)), ims) for t, ims in specs]


def test_collate_equals_processor_batch(chat_model, image_root):
    specs, prompts = _prompts(chat_model, image_root)
    batch = chat_model.collate(prompts)
    ref = chat_model.processor([build_conversation(t, len(ims)) for t, ims in specs], [ims for _, ims in specs],
                               return_tensors="np")
    for key in ("input_ids", "attention_mask", "pixel_values", "image_grid_thw"):
        np.testing.assert_array_equal(batch[key].numpy(), ref[key], err_msg=key)


def test_text_only_batch_has_no_pixels(chat_model):
    batch = chat_model.collate([chat_model.encode(build_conversation("hi", 0), [])])
    assert batch["pixel_values"] is None and batch["image_grid_thw"] is None


def test_batched_greedy_equals_lone_generate(chat_model, reference, image_root):
    """Left padding and other rows in the batch do not change a row's greedy tokens (exact equality)."""
    from paddlemix_r1.generation import generate

    specs, prompts = _prompts(chat_model, image_root)
    limits = [12, 5, 9, 12, 3]
    worker = BatchWorker(chat_model, max_batch_size=8)
    results = _run_all(worker, [(p, SamplingParams(temperature=0.0, max_tokens=m)) for p, m in zip(prompts, limits)])
    assert worker.metrics()["batch_sizes"] == {"5": 1}
    for (text, images), limit, result in zip(specs, limits, results):
        batch = reference.proc([build_conversation(text, len(images))], [images])
        out = generate(reference.model, batch, max_new_tokens=limit, do_sample=False,
                       eos_token_id=reference.proc.eos_token_id, pad_token_id=reference.proc.pad_token_id)
        lone = out.completion_ids.numpy()[0, : int(out.completion_mask.sum())].tolist()
        assert result[0].token_ids == lone, text


def test_seeded_sampling_runs_alone_and_reproduces(chat_model, reference, image_root):
    from paddlemix_r1.generation import generate

    _, prompts = _prompts(chat_model, image_root)
    seeded = SamplingParams(temperature=0.9, top_p=0.95, n=2, max_tokens=6, seed=11)
    unseeded = SamplingParams(temperature=0.9, top_p=0.95, n=2, max_tokens=6)
    worker = BatchWorker(chat_model, max_batch_size=8)
    results = _run_all(worker, [(prompts[0], seeded), (prompts[1], unseeded), (prompts[0], seeded),
                                (prompts[2], unseeded)])
    # the two seeded requests each ran alone; the two unseeded ones shared one call
    assert worker.metrics()["batch_sizes"] == {"1": 2, "2": 1}
    assert [c.token_ids for c in results[0]] == [c.token_ids for c in results[2]]
    out = generate(reference.model, chat_model.collate([prompts[0]]), max_new_tokens=6, do_sample=True,
                   temperature=0.9, top_p=0.95, num_return_sequences=2, eos_token_id=reference.proc.eos_token_id,
                   pad_token_id=reference.proc.pad_token_id, seed=11)
    mask = out.completion_mask.numpy()
    lone = [out.completion_ids.numpy()[r, : mask[r].sum()].tolist() for r in range(2)]
    assert [c.token_ids for c in results[0]] == lone


def test_groups_by_parameters_and_rows(chat_model, image_root):
    _, prompts = _prompts(chat_model, image_root)
    g1, g2 = SamplingParams(temperature=0.0, max_tokens=2), SamplingParams(temperature=0.0, n=2, max_tokens=2)
    worker = BatchWorker(chat_model, max_batch_size=4)
    # rows: g1 x3 fit one call (3 rows); g2 x3 needs 6 rows > 4: two calls (2 + 1 requests)
    results = _run_all(worker, [(prompts[i % 5], g) for i, g in enumerate([g1, g2, g1, g2, g1, g2])])
    assert [len(r) for r in results] == [1, 2, 1, 2, 1, 2]
    assert worker.metrics()["batch_sizes"] == {"1": 1, "2": 1, "3": 1}
    with pytest.raises(ValueError, match="max_batch_size"):
        worker.submit(prompts[0], SamplingParams(n=5))


class _Chars:
    """A stand-in ChatModel whose tokens are characters (decode = join)."""

    def decode(self, ids: list[int]) -> str:
        return "".join(chr(i) for i in ids)


def test_finish_cuts_at_the_first_stop_string_and_counts_its_tokens():
    ids = [ord(c) for c in "hello world, bye"]
    out = finish(_Chars(), Completion(ids, hit_eos=False), ["bye", "o w"])
    assert out == {"text": "hell", "finish_reason": "stop", "completion_tokens": len("hello w")}
    assert finish(_Chars(), Completion(ids, hit_eos=False), [])["finish_reason"] == "length"
    assert finish(_Chars(), Completion(ids, hit_eos=True), ["zzz"]) == {
        "text": "hello world, bye", "finish_reason": "stop", "completion_tokens": len(ids)}
