"""Our Qwen2-VL / Qwen2.5-VL against transformers' fp32 forward on tiny random checkpoints."""

from __future__ import annotations

import numpy as np
import paddle
import pytest
from hf_reference import (
    IMAGE_TOKEN,
    VIDEO_TOKEN,
    VISION_END,
    VISION_START,
    HFModel,
    build_hf_checkpoint,
    to_published_layout,
)

from paddlemix_r1.models import from_pretrained

TOL = 1e-4
PATCH_DIM = 3 * 2 * 14 * 14

# (family, config layout, tied lm_head): both families, both layouts, tied and untied.
CASES = [
    ("qwen2_vl", "transformers5", False),
    ("qwen2_vl", "published", True),
    ("qwen2_5_vl", "transformers5", True),
    ("qwen2_5_vl", "published", False),
]


@pytest.fixture(scope="module", params=CASES, ids=lambda c: "-".join(str(x) for x in c))
def pair(request, tmp_path_factory):
    family, layout, tie = request.param
    d = str(tmp_path_factory.mktemp(f"{family}-{layout}"))
    build_hf_checkpoint(d, family, tie=tie)
    if layout == "published":
        to_published_layout(d)
    return family, HFModel(d, family), from_pretrained(d, dtype="float32")


def _prompt(rng, grids, token=IMAGE_TOKEN, pre=3, post=4):
    ids = list(rng.integers(0, 250, pre))
    for t, h, w in grids:
        ids += [VISION_START] + [token] * (t * h * w // 4) + [VISION_END] + list(rng.integers(0, 250, 2))
    return ids + list(rng.integers(0, 250, post))


def _batch(rng, prompts_grids, token=IMAGE_TOKEN):
    """Left-padded batch of prompts, each with its own image grids."""
    seqs = [_prompt(rng, g, token, pre=3 + 4 * i) for i, g in enumerate(prompts_grids)]
    length = max(map(len, seqs))
    ids = np.zeros((len(seqs), length), np.int64)
    mask = np.zeros((len(seqs), length), np.int64)
    for i, s in enumerate(seqs):
        ids[i, length - len(s):] = s
        mask[i, length - len(s):] = 1
    grids = [g for gs in prompts_grids for g in gs]
    batch = {"input_ids": ids, "attention_mask": mask}
    if grids:
        n = sum(t * h * w for t, h, w in grids)
        key = "pixel_values" if token == IMAGE_TOKEN else "pixel_values_videos"
        batch[key] = rng.standard_normal((n, PATCH_DIM)).astype("float32")
        batch["image_grid_thw" if token == IMAGE_TOKEN else "video_grid_thw"] = np.asarray(grids, np.int64)
    return batch


def _ours(model, batch):
    return model(**{k: paddle.to_tensor(v) for k, v in batch.items()}).logits.numpy()


def _assert_close(model, hf, batch):
    ours, ref = _ours(model, batch), hf.logits(batch)
    keep = batch["attention_mask"].astype(bool)
    diff = np.abs(ours - ref)[keep].max()
    assert diff <= TOL, f"max |diff| {diff:.3g} on non-pad positions"


@pytest.mark.parametrize(
    "prompts_grids",
    [
        pytest.param([[]], id="text-only"),
        pytest.param([[(1, 8, 12)]], id="one-image"),
        pytest.param([[(1, 8, 12), (1, 6, 4)]], id="two-images-different-sizes"),
        pytest.param([[(1, 4, 4)]], id="image-at-min-pixels"),
        pytest.param([[(1, 10, 6)], [(1, 4, 8), (1, 2, 2)]], id="left-padded-batch"),
    ],
)
def test_logits_match_transformers(pair, prompts_grids):
    _, hf, model = pair
    _assert_close(model, hf, _batch(np.random.default_rng(len(str(prompts_grids))), prompts_grids))


def test_logits_match_transformers_with_cpu_kernels_on_every_shape(pair, monkeypatch):
    """The compiled CPU kernels (vision attention, norms, activations, softmax) take only inputs above a
    size threshold, which these tiny models stay below; with the thresholds at 0 they compute the whole
    model, and the logits still match transformers."""
    from paddlemix_r1.ops import cpu_ext

    if not cpu_ext.available():
        pytest.skip(f"CPU kernels: {cpu_ext.status()}")
    monkeypatch.setattr(cpu_ext, "MIN_NUMEL", dict.fromkeys(cpu_ext.MIN_NUMEL, 0))
    _, hf, model = pair
    _assert_close(model, hf, _batch(np.random.default_rng(3), [[(1, 10, 6)], [(1, 4, 8), (1, 2, 2)]]))


def test_video_logits_match_transformers(pair):
    _, hf, model = pair
    batch = _batch(np.random.default_rng(7), [[(2, 4, 6)]], token=VIDEO_TOKEN)
    _assert_close(model, hf, batch)


def test_text_only_left_padding_positions_skip_padding(pair):
    """A left-padded text row gets the same logits as the unpadded row: padding does not shift positions."""
    _, _, model = pair
    ids = np.array([[0, 0, 5, 6, 7, 8], [1, 2, 5, 6, 7, 8]])
    mask = np.array([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    padded = _ours(model, {"input_ids": ids, "attention_mask": mask})[0, 2:]
    alone = _ours(model, {"input_ids": ids[:1, 2:], "attention_mask": mask[:1, 2:]})[0]
    np.testing.assert_allclose(padded, alone, atol=1e-5)


@pytest.mark.parametrize(
    "grids,kind,secs",
    [
        ([[(1, 8, 12), (1, 6, 4)], [(1, 2, 2)]], "image", None),
        ([[(3, 4, 6)], [(2, 2, 4)]], "video", [1.0, 0.5]),
        ([[(2, 6, 4)]], "video", [2.5]),
    ],
)
def test_rope_index_matches_transformers(pair, grids, kind, secs):
    family, hf, model = pair
    token = IMAGE_TOKEN if kind == "image" else VIDEO_TOKEN
    batch = _batch(np.random.default_rng(3), grids, token=token)
    batch.pop("pixel_values", None)
    batch.pop("pixel_values_videos", None)
    if secs is not None and family == "qwen2_5_vl":
        batch["second_per_grid_ts"] = np.asarray(secs, np.float32)
    ref_pos, ref_delta = hf.rope_index(batch)
    pos, delta = model.rope_index(
        batch["input_ids"], batch["attention_mask"], batch.get("image_grid_thw"), batch.get("video_grid_thw"),
        batch.get("second_per_grid_ts"),
    )
    keep = batch["attention_mask"].astype(bool)
    np.testing.assert_array_equal(pos.numpy()[:, keep], ref_pos[:, keep])
    np.testing.assert_array_equal(delta.numpy(), ref_delta)
