"""Rollout engine: greedy parity with transformers' generate, cache == no-cache, sampling contracts."""

from __future__ import annotations

import numpy as np
import paddle
import pytest
import torch
from hf_reference import IMAGE_TOKEN, VISION_END, VISION_START, HFModel, build_hf_checkpoint

from paddlemix_r1.generation import GroupedKVCache, decode_one_token, generate, pack_decoder, prefill
from paddlemix_r1.generation.engine import forward
from paddlemix_r1.models import from_pretrained

FAMILIES = ["qwen2_vl", "qwen2_5_vl"]
PAD = 0


@pytest.fixture(scope="module", params=FAMILIES)
def pair(request, tmp_path_factory):
    d = str(tmp_path_factory.mktemp(request.param))
    build_hf_checkpoint(d, request.param)
    return HFModel(d, request.param), from_pretrained(d)


def _prompt(head, grids):
    ids = list(head)
    for _, h, w in grids:
        ids += [VISION_START] + [IMAGE_TOKEN] * (h * w // 4) + [VISION_END, 11]
    return ids + [12, 13]


def make_batch(prompts: list[tuple[list[int], list[tuple[int, int, int]]]], seed: int = 0) -> dict:
    seqs = [_prompt(h, g) for h, g in prompts]
    length = max(map(len, seqs))
    ids = np.full((len(seqs), length), PAD, np.int64)
    mask = np.zeros((len(seqs), length), np.int64)
    for i, s in enumerate(seqs):
        ids[i, length - len(s):] = s
        mask[i, length - len(s):] = 1
    batch = {"input_ids": ids, "attention_mask": mask}
    grids = [g for _, gs in prompts for g in gs]
    if grids:
        n = sum(t * h * w for t, h, w in grids)
        batch["pixel_values"] = np.random.default_rng(seed).standard_normal((n, 1176)).astype("float32")
        batch["image_grid_thw"] = np.asarray(grids, np.int64)
    return batch


BATCHES = {
    "one-image": [([1, 2, 3], [(1, 8, 12)])],
    "two-images": [([1, 2], [(1, 8, 12), (1, 4, 6)])],
    "left-padded-pair": [([1, 2, 3, 4, 5], [(1, 8, 12)]), ([7], [(1, 4, 6)])],
}


def _paddle(batch):
    return {k: paddle.to_tensor(v) for k, v in batch.items()}


def _hf_generate(hf, batch, eos=None, n=24):
    with torch.no_grad():
        out = hf.model.generate(**hf._kwargs(batch), max_new_tokens=n, do_sample=False, pad_token_id=PAD,
                                eos_token_id=eos)
    return out[:, batch["input_ids"].shape[1]:].numpy()


@pytest.mark.slow
@pytest.mark.parametrize("name", list(BATCHES))
def test_greedy_matches_transformers(pair, name):
    hf, model = pair
    batch = make_batch(BATCHES[name])
    ref = _hf_generate(hf, batch)
    ours = generate(model, _paddle(batch), max_new_tokens=24, do_sample=False, pad_token_id=PAD).completion_ids.numpy()
    np.testing.assert_array_equal(ours, ref)


@pytest.mark.slow
def test_greedy_stops_at_eos_like_transformers(pair):
    hf, model = pair
    batch = make_batch(BATCHES["left-padded-pair"])
    free = _hf_generate(hf, batch)
    eos = int(free[0, 9])  # a token row 0 emits at step 9: that row must stop there
    ref = _hf_generate(hf, batch, eos=eos)
    out = generate(model, _paddle(batch), max_new_tokens=24, do_sample=False, pad_token_id=PAD, eos_token_id=eos)
    ours = out.completion_ids.numpy()
    assert ours.shape[1] == ref.shape[1]
    np.testing.assert_array_equal(ours, ref)
    first_eos = int(np.argmax(ours[0] == eos))
    assert first_eos <= 9
    mask = out.completion_mask.numpy()
    assert mask[0, : first_eos + 1].all() and not mask[0, first_eos + 1:].any()
    assert (ours[0, first_eos + 1:] == PAD).all()


def test_cached_decode_logits_equal_full_forward(pair):
    _, model = pair
    batch = _paddle(make_batch(BATCHES["left-padded-pair"]))
    steps = 8
    logits, cache, _, deltas = prefill(model, batch, steps)
    mask = batch["attention_mask"]
    next_pos = mask.sum(axis=1) + deltas
    ids = batch["input_ids"]
    tok = None
    for s in range(steps):
        if s > 0:
            mask = paddle.concat([mask, paddle.ones([2, 1], "int64")], axis=1)
            logits = decode_one_token(model, tok, mask, next_pos + s - 1, cache)
        full = model(input_ids=ids, attention_mask=mask, pixel_values=batch["pixel_values"],
                     image_grid_thw=batch["image_grid_thw"]).logits[:, -1]
        diff = float((logits - full).abs().max())
        assert diff <= 1e-4, f"step {s}: max |cached - full| = {diff}"
        tok = paddle.argmax(logits, axis=-1)
        ids = paddle.concat([ids, tok.unsqueeze(-1)], axis=1)


def test_packed_projections_keep_the_logits_and_are_undone(pair):
    """The rollout's packed GEMMs (q/k/v and gate/up concatenated, RMSNorm weights and the attention
    scale folded in) give the model's logits; the model itself is left as it was."""
    _, model = pair
    batch = _paddle(make_batch(BATCHES["left-padded-pair"]))
    before = {n: p.numpy().copy() for n, p in model.named_parameters()}
    with paddle.no_grad():
        ref = model(**batch).logits.numpy()
        packed = forward(model, batch, packed=pack_decoder(model.model)).logits.numpy()
        after = model(**batch).logits.numpy()
    keep = batch["attention_mask"].numpy().astype(bool)
    assert np.abs(packed - ref)[keep].max() <= 1e-4
    np.testing.assert_array_equal(after, ref)
    assert all(np.array_equal(before[n], p.numpy()) for n, p in model.named_parameters())


def test_grouped_cache_decode_logits_equal_full_forward(pair):
    """The rollout's cache (each prompt's keys/values once, G rows of own tokens) gives, at every step
    and for every one of the G rows of a left-padded pair of prompts, the logits of a full forward
    without cache over prompt + that row's tokens."""
    _, model = pair
    batch = _paddle(make_batch(BATCHES["left-padded-pair"]))
    g, steps = 3, 6
    logits, prompt_cache, _, deltas = prefill(model, batch, 0)
    cache = GroupedKVCache(prompt_cache, batch["attention_mask"], g, steps, model.config.text.num_attention_heads)
    logits = paddle.repeat_interleave(logits, g, axis=0)  # (2G, V)
    ids = paddle.repeat_interleave(batch["input_ids"], g, axis=0)
    mask = paddle.repeat_interleave(batch["attention_mask"], g, axis=0)
    next_pos = mask.sum(axis=1) + paddle.repeat_interleave(deltas, g, axis=0)
    grid = paddle.repeat_interleave(batch["image_grid_thw"], g, axis=0)
    pix = paddle.concat([batch["pixel_values"][:96]] * g + [batch["pixel_values"][96:]] * g)  # images per row
    rng = np.random.default_rng(0)
    tok = None
    for s in range(steps):
        if s > 0:
            logits = decode_one_token(model, tok, None, next_pos + s - 1, cache)
        full = model(input_ids=ids, attention_mask=mask, pixel_values=pix, image_grid_thw=grid).logits[:, -1]
        diff = float((logits - full).abs().max())
        assert diff <= 1e-4, f"step {s}: max |grouped cache - full| = {diff}"
        tok = paddle.to_tensor(rng.integers(20, 200, size=2 * g))  # rows of a group diverge
        ids = paddle.concat([ids, tok.unsqueeze(-1)], axis=1)
        mask = paddle.concat([mask, paddle.ones([2 * g, 1], "int64")], axis=1)
    with pytest.raises(ValueError, match="overflow"):
        for _ in range(2):
            decode_one_token(model, tok, None, next_pos + steps, cache)


def test_rollout_positions_equal_rope_index_of_full_sequence(pair):
    """The position ids the rollout used are the ones a log-prob pass over prompt+completion computes."""
    _, model = pair
    batch = _paddle(make_batch(BATCHES["left-padded-pair"]))
    out = generate(model, batch, max_new_tokens=6, do_sample=True, num_return_sequences=2, pad_token_id=PAD, seed=1)
    prompts = paddle.repeat_interleave(out.prompt_ids, 2, axis=0)  # (N, L): the output keeps each prompt once
    full_ids = paddle.concat([prompts, out.completion_ids], axis=1)
    grid = paddle.repeat_interleave(batch["image_grid_thw"], 2, axis=0)
    pos, _ = model.rope_index(full_ids, out.attention_mask, grid)
    keep = out.attention_mask.numpy().astype(bool)
    np.testing.assert_array_equal(pos.numpy()[:, keep], out.position_ids.numpy()[:, keep])


def test_seed_reproducible_topk1_is_greedy_groups_differ(pair):
    _, model = pair
    batch = _paddle(make_batch(BATCHES["one-image"]))
    kw = dict(max_new_tokens=12, pad_token_id=PAD, num_return_sequences=4)
    a = generate(model, batch, do_sample=True, temperature=1.0, seed=123, **kw).completion_ids.numpy()
    b = generate(model, batch, do_sample=True, temperature=1.0, seed=123, **kw).completion_ids.numpy()
    np.testing.assert_array_equal(a, b)
    assert len({tuple(r) for r in a}) > 1, "G samples of one prompt at temperature 1 should differ"
    greedy = generate(model, batch, do_sample=False, **kw).completion_ids.numpy()
    top1 = generate(model, batch, do_sample=True, top_k=1, seed=5, **kw).completion_ids.numpy()
    np.testing.assert_array_equal(top1, greedy)
    assert (greedy == greedy[0]).all(), "greedy rows of one group are identical"


def test_group_major_order(pair):
    _, model = pair
    prompts = BATCHES["left-padded-pair"]
    both = generate(model, _paddle(make_batch(prompts)), max_new_tokens=8, do_sample=False, pad_token_id=PAD,
                    num_return_sequences=3).completion_ids.numpy()
    for i in range(2):
        single = generate(model, _paddle(make_batch([prompts[i]], seed=0 if i == 0 else 99)), max_new_tokens=8,
                          do_sample=False, pad_token_id=PAD).completion_ids.numpy()
        if i == 0:  # same pixels as in the pair batch (first image comes first)
            np.testing.assert_array_equal(both[0:3], np.repeat(single, 3, axis=0))
        assert (both[3 * i: 3 * i + 3] == both[3 * i]).all()


def test_sampling_logprobs_match_temperature_scaled_forward(pair):
    _, model = pair
    batch = _paddle(make_batch(BATCHES["left-padded-pair"]))
    out = generate(model, batch, max_new_tokens=6, do_sample=True, temperature=0.7, top_p=0.9, top_k=50,
                   num_return_sequences=2, pad_token_id=PAD, seed=3)
    prompts = paddle.repeat_interleave(out.prompt_ids, 2, axis=0)  # (N, L): the output keeps each prompt once
    full_ids = paddle.concat([prompts, out.completion_ids], axis=1)
    embeds = model.embed(full_ids, batch["pixel_values"], batch["image_grid_thw"], group_size=2)  # vision once per prompt
    logits = model.lm_head(model.model(embeds, out.position_ids, out.attention_mask))  # (N, L + T, V)
    t = out.completion_ids.shape[1]
    pred = logits[:, -t - 1:-1] / 0.7  # (N, T, V) logits that predicted each completion token
    lp = paddle.take_along_axis(paddle.nn.functional.log_softmax(pred, -1), out.completion_ids.unsqueeze(-1), -1)[..., 0]
    lp = lp * out.completion_mask.astype("float32")
    np.testing.assert_allclose(lp.numpy(), out.logprobs.numpy(), atol=1e-4)
