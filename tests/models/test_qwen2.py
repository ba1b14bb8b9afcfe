"""Text-only Qwen2 (Qwen2ForCausalLM) against transformers: fp32 logits and greedy generation.

transformers and torch run in a subprocess (tests/models/qwen2_reference.py), never in this process; one
subprocess builds every reference checkpoint (tied and untied heads, both config layouts) and writes its
outputs to an npz.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import paddle
import pytest

from paddlemix_r1.generation import generate
from paddlemix_r1.models import ModelConfig, Qwen2ForCausalLM, from_pretrained

TOL = 1e-4
REFERENCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "qwen2_reference.py")
MAX_NEW = 12
PAD = 0
# (name, tied lm_head, config layout, rope_theta)
CASES = [
    ("untied-transformers5", False, "transformers5", 10000.0),
    ("tied-transformers5", True, "transformers5", 1000000.0),
    ("untied-published", False, "published", 1000000.0),
    ("tied-published", True, "published", 10000.0),
]


def _inputs() -> dict[str, np.ndarray]:
    """Three prompts of different lengths, left-padded."""
    rng = np.random.default_rng(0)
    seqs = [rng.integers(1, 320, n).tolist() for n in (9, 4, 6)]
    length = max(map(len, seqs))
    ids = np.full((len(seqs), length), PAD, np.int64)
    mask = np.zeros((len(seqs), length), np.int64)
    for i, s in enumerate(seqs):
        ids[i, length - len(s):] = s
        mask[i, length - len(s):] = 1
    return {"input_ids": ids, "attention_mask": mask}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    work = tmp_path_factory.mktemp("qwen2-ref")
    np.savez(work / "inputs.npz", **_inputs())
    cases = [{"name": n, "dir": str(work / n), "tie": t, "layout": lay, "rope_theta": th} for n, t, lay, th in CASES]
    spec = {"inputs": str(work / "inputs.npz"), "max_new_tokens": MAX_NEW, "cases": cases}
    (work / "spec.json").write_text(json.dumps(spec))
    proc = subprocess.run([sys.executable, REFERENCE, str(work / "spec.json"), str(work / "ref.npz")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {c["name"]: c["dir"] for c in cases}, dict(np.load(work / "ref.npz"))


@pytest.mark.slow
@pytest.mark.parametrize("case", [c[0] for c in CASES])
def test_logits_match_transformers(reference, case):
    dirs, ref = reference
    model = from_pretrained(dirs[case], dtype="float32")
    assert isinstance(model, Qwen2ForCausalLM)
    inputs = _inputs()
    logits = model(input_ids=paddle.to_tensor(inputs["input_ids"]),
                   attention_mask=paddle.to_tensor(inputs["attention_mask"])).logits.numpy()
    keep = inputs["attention_mask"].astype(bool)
    diff = np.abs(logits - ref[f"{case}/logits"])[keep].max()
    assert diff <= TOL, f"max |diff| {diff:.3g} on non-pad positions"


@pytest.mark.slow
def test_config_layouts_read_the_same_fields(reference):
    """Both layouts give the same parsed config (rope_theta from rope_parameters or the top level; the
    published layout's sliding-window fields, switched off, leave every layer on full attention)."""
    dirs, _ = reference
    a = ModelConfig.from_file(os.path.join(dirs["untied-transformers5"], "config.json"))
    b = ModelConfig.from_file(os.path.join(dirs["untied-published"], "config.json"))
    assert a.text.rope_theta == 10000.0 and b.text.rope_theta == 1000000.0
    assert (a.model_type, a.vision, a.tie_word_embeddings) == (b.model_type, b.vision, False)
    assert a.text.head_dim == 16 and a.text.num_key_value_heads == 2


@pytest.mark.slow
@pytest.mark.parametrize("case", ["untied-transformers5", "tied-published"])
def test_greedy_generation_matches_transformers(reference, case):
    dirs, ref = reference
    model = from_pretrained(dirs[case], dtype="float32")
    batch = {k: paddle.to_tensor(v) for k, v in _inputs().items()}
    out = generate(model, batch, max_new_tokens=MAX_NEW, do_sample=False, pad_token_id=PAD)
    np.testing.assert_array_equal(out.completion_ids.numpy(), ref[f"{case}/greedy"])
    eos = int(ref[f"{case}/eos"])
    out = generate(model, batch, max_new_tokens=MAX_NEW, do_sample=False, eos_token_id=eos, pad_token_id=PAD)
    hf = ref[f"{case}/greedy_eos"]  # transformers stops when every row has emitted eos; pads after
    ours = out.completion_ids.numpy()[:, :hf.shape[1]]
    np.testing.assert_array_equal(ours, hf)
    assert (out.completion_ids.numpy()[:, hf.shape[1]:] == PAD).all()


def test_sliding_window_switched_on_is_refused():
    d = {"model_type": "qwen2", "vocab_size": 32, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 4,
         "num_attention_heads": 2, "use_sliding_window": True, "sliding_window": 16, "max_window_layers": 2}
    with pytest.raises(ValueError, match="layers 2..3 use sliding-window attention"):
        ModelConfig.from_dict(d, "cfg.json")
    d["max_window_layers"] = 4  # transformers: no layer at or past max_window_layers -> all full attention
    assert ModelConfig.from_dict(d, "cfg.json").text.num_hidden_layers == 4


def test_architectures_alone_pick_the_text_family():
    d = {"architectures": ["Qwen2ForCausalLM"], "vocab_size": 32, "hidden_size": 32, "intermediate_size": 64,
         "num_hidden_layers": 1, "num_attention_heads": 2}
    assert ModelConfig.from_dict(d).model_type == "qwen2"


def test_acceptance_from_pretrained_on_a_tiny_text_checkpoint(tmp_path):
    """The documented entry point on a held-out tiny Qwen2ForCausalLM: load and run a forward."""
    from paddlemix_r1.models import build_tiny_text_checkpoint

    path = build_tiny_text_checkpoint(str(tmp_path / "tiny-qwen2"), seed=3, tie_word_embeddings=False)
    assert not os.path.exists(os.path.join(path, "preprocessor_config.json"))
    model = from_pretrained(path, dtype="float32")
    ids = paddle.to_tensor([[5, 6, 7, 8], [0, 9, 10, 11]])
    mask = paddle.to_tensor([[1, 1, 1, 1], [0, 1, 1, 1]])
    logits = model(input_ids=ids, attention_mask=mask).logits
    assert logits.shape == [2, 4, model.config.text.vocab_size]
    assert np.isfinite(logits.numpy()).all()
    # left padding does not shift positions: the padded row's logits equal the row alone
    alone = model(input_ids=ids[1:, 1:], attention_mask=mask[1:, 1:]).logits
    np.testing.assert_allclose(logits.numpy()[1, 1:], alone.numpy()[0], atol=1e-5)
    # saved and reloaded, the same logits (the text-only config writes back)
    model.save_pretrained(str(tmp_path / "copy"))
    again = from_pretrained(str(tmp_path / "copy"))(input_ids=ids, attention_mask=mask).logits
    np.testing.assert_allclose(again.numpy(), logits.numpy(), atol=1e-6)


def test_text_model_refuses_pixels(tmp_path):
    from paddlemix_r1.models import tiny_text_config

    model = Qwen2ForCausalLM(tiny_text_config(vocab_size=64))
    with pytest.raises(ValueError, match="text-only"):
        model(input_ids=paddle.to_tensor([[1, 2]]), pixel_values=paddle.zeros([4, 1176]),
              image_grid_thw=paddle.to_tensor([[1, 2, 2]]))
