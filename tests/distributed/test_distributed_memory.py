"""The memory model behind docs/distributed.md (paddlemix_r1/distributed/memory.py): formula-level checks.

Nothing here runs on a GPU; these tests pin the arithmetic the docs state, so that a change to one term shows up
as a failing equality rather than a silently different table.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from paddlemix_r1.distributed import memory as mem
from paddlemix_r1.distributed.memory import (
    GB,
    QWEN2_5_VL_3B,
    QWEN2_5_VL_7B,
    Architecture,
    Workload,
    activation_bytes,
    activation_terms,
    attention_score_bytes,
    budget_table,
    count_parameters,
    decoder_layer_memory,
    decoder_layer_peak_bytes,
    memory_budget,
    parameter_shapes,
    stage2_rank_elements,
    stage3_split,
)
from paddlemix_r1.models import MODEL_CLASSES, build_tiny_checkpoint, from_pretrained
from paddlemix_r1.models.tiny import tiny_config

DOC = Path(__file__).resolve().parents[2] / "docs" / "distributed.md"
W = Workload()


# ----- parameters -----

@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl"])
@pytest.mark.parametrize("tie", [True, False])
def test_distributed_parameter_shapes_are_the_model_classes_in_order(family, tie):
    # order matters: Paddle's stage-1/2 optimizer splits parameters greedily in model.parameters() order
    model = MODEL_CLASSES[family](tiny_config(family, tie_word_embeddings=tie, layers=2, vision_depth=2))
    arch = Architecture.from_model_config(model.config)
    ours = [(n, tuple(p.shape)) for n, p in model.named_parameters()]
    assert parameter_shapes(arch) == ours
    assert count_parameters(arch)["vision"] == sum(int(p.numel()) for p in model.visual.parameters())


def test_distributed_parameter_count_of_a_loaded_checkpoint(tmp_path):
    model = from_pretrained(build_tiny_checkpoint(str(tmp_path), family="qwen2_5_vl", tie_word_embeddings=False))
    assert count_parameters(Architecture.from_model_config(model.config))["total"] == sum(
        int(p.numel()) for p in model.parameters())


def test_distributed_parameter_counts_of_the_published_models():
    # Totals of the published safetensors: 3,754,622,976 (3B, tied head) and 8,292,166,656 (7B).
    assert count_parameters(QWEN2_5_VL_3B)["total"] == 3_754_622_976
    assert count_parameters(QWEN2_5_VL_7B)["total"] == 8_292_166_656


# ----- one decoder layer -----

@pytest.mark.parametrize("arch", [QWEN2_5_VL_3B, QWEN2_5_VL_7B], ids=lambda a: a.name)
@pytest.mark.parametrize("t", [256, 1024, 4096])
def test_distributed_layer_peak_closed_form(arch, t):
    """The formula decoder_layer_peak_bytes documents (flash, one sequence, dense mask, bf16)."""
    h, i, hd = arch.hidden_size, arch.intermediate_size, arch.head_dim
    q, kv, b = arch.num_heads * hd, arch.num_kv_heads * hd, 2
    saved = t * b * (3 * h + 3 * i + 2 * q + 2 * kv + 2 * hd) + 8 * t + arch.num_heads * (-(-t // 128) * 128) * 4 \
        + t * t * b
    assert decoder_layer_memory(arch, 1, t).saved_bytes == saved
    peak = saved + 2 * t * h * b + b * max(t * i + i * h, 2 * t * i)
    assert decoder_layer_peak_bytes(arch, t) == peak
    # recompute measured on one layer: the same steps next to the no-grad forward's output
    assert decoder_layer_peak_bytes(arch, t, recompute=True) == peak + t * h * b


def test_distributed_layer_flash_vs_math_is_the_score_matrix():
    a, rows, lq, prefix = QWEN2_5_VL_3B, 8, 256, 1024
    flash = decoder_layer_memory(a, rows, lq, prefix)
    math_ = decoder_layer_memory(a, rows, lq, prefix, flash=False)
    k = lq + prefix
    scores = attention_score_bytes(rows, lq, k, a.num_heads)
    assert scores == rows * 16 * 256 * 1280 * 2
    assert math_.saved["probabilities"] == scores
    # saved: + one score matrix, + K/V repeated to all heads (GQA), - the fp32 log-sum-exp
    kv = 2 * rows * k * a.num_kv_heads * a.head_dim * 2
    kv_rep = 2 * rows * k * a.num_heads * a.head_dim * 2
    lse = rows * a.num_heads * 256 * 4
    assert math_.saved_bytes - flash.saved_bytes == scores + (kv_rep - kv) - lse
    # flash keeps no (B, heads, Lq, K) term; its only quadratic one is the (B, 1, Lq, K) mask, 1/heads of it
    assert "probabilities" not in flash.saved
    assert flash.saved["attention mask (bf16)"] * a.num_heads == scores
    # MHA (no GQA copies): the difference is exactly one score matrix minus the lse
    mha = dataclasses.replace(a, num_kv_heads=a.num_heads)
    d = decoder_layer_memory(mha, rows, lq, prefix, flash=False).saved_bytes - \
        decoder_layer_memory(mha, rows, lq, prefix).saved_bytes
    assert d == scores - lse
    # the math path grows quadratically: 4x the tokens, ~16x the score term
    assert decoder_layer_peak_bytes(a, 4096, flash=False) - decoder_layer_peak_bytes(a, 4096) > \
        attention_score_bytes(1, 4096, 4096, a.num_heads)


def test_distributed_layer_peak_rejects_bad_token_counts():
    with pytest.raises(ValueError, match="multiple"):
        decoder_layer_peak_bytes(QWEN2_5_VL_3B, 1000, sequences=3)


# ----- activations of the policy's micro-batch -----

@pytest.mark.parametrize("arch", [QWEN2_5_VL_3B, QWEN2_5_VL_7B], ids=lambda a: a.name)
def test_distributed_recompute_keeps_layer_inputs_only(arch):
    rc, no = activation_terms(arch, W), activation_terms(arch, dataclasses.replace(W, recompute=False))
    layers, b, h = arch.num_layers, 2, arch.hidden_size
    dkv = arch.num_kv_heads * arch.head_dim
    tp, tc = 1 * 1024, 8 * 256
    # recompute: every layer's input (+ the final norm's), the prompt K/V each layer returns, the repeated prefix
    assert rc["prompt_pass_kept"] == (layers + 1) * tp * h * b + layers * 2 * tp * dkv * b + 4 * tp
    assert rc["completion_pass_kept"] == (layers + 1) * tc * h * b + layers * 2 * 8 * 1024 * dkv * b + 4 * tc
    # without: every layer's saved activations next to its input
    prompt = decoder_layer_memory(arch, 1, 1024)
    comp = decoder_layer_memory(arch, 8, 256, 1024)
    assert no["prompt_pass_kept"] == layers * (prompt.saved_bytes + tp * h * b) + tp * h * b + 4 * tp
    assert no["completion_pass_kept"] == layers * (comp.saved_bytes + tc * h * b) + tc * h * b + 4 * tc
    # the expected factor: (saved + input) / (input + K/V kept) per layer; > 10x for these shapes
    factor = no["prompt_pass_kept"] / rc["prompt_pass_kept"]
    expect = (prompt.saved_bytes + tp * h * b) / (tp * h * b + 2 * tp * dkv * b)
    assert factor == pytest.approx(expect, rel=0.05) and factor > 10
    # one layer's full activations are paid once, during its recompute + backward
    assert rc["peak: completion layer backward"] - (
        rc["vision_kept"] + rc["prompt_pass_kept"] + rc["completion_pass_kept"] + rc["tables_and_masks_kept"]
    ) == layers * 2 * tp * dkv * b + decoder_layer_memory(arch, 8, 256, 1024, recompute=True).peak - tc * h * b
    # the vision tower is never recomputed: the same with and without
    assert rc["vision_kept"] == no["vision_kept"] > 0
    assert activation_bytes(arch, dataclasses.replace(W, recompute=False)) > activation_bytes(arch, W)


def test_distributed_lm_head_backward_terms():
    """ops/logprobs.py, bf16 weight: fp32 V x H accumulator + bf16 V x H product + its fp32 cast + chunk buffers."""
    a = QWEN2_5_VL_3B
    vh, cv = a.vocab_size * a.hidden_size, 512 * a.vocab_size
    head = mem.lm_head_memory(a, rows=2048, chunk=512)
    assert head["fp32 weight-gradient accumulator"] == 4 * vh
    assert head["backward peak"] == 2048 * a.hidden_size * 2 + 4 * vh + 2 * vh + 4 * vh + 3 * 2 * cv
    assert head["backward peak"] / GB == pytest.approx(3.59, abs=0.01)  # audit R4(b): 1.2 + 0.6 + 1.2 GB + chunks
    fp32 = mem.lm_head_memory(a, rows=2048, chunk=512, dtype_bytes=4)  # in-place addmm_: no V x H temporaries
    assert fp32["backward peak"] == 2048 * a.hidden_size * 4 + 4 * vh + 3 * 4 * cv


# ----- sharding -----

@pytest.mark.parametrize("tie", [True, False])
def test_distributed_stage3_split_matches_the_parameters(tie):
    arch = Architecture.from_model_config(tiny_config("qwen2_5_vl", tie_word_embeddings=tie))
    seg = 1000  # small enough that the tiny model has parameters on both sides
    sp = stage3_split(arch, segment_size=seg)
    excluded = {"lm_head.weight"} | ({"model.embed_tokens.weight"} if tie else set())
    shapes = parameter_shapes(arch)
    whole = sum(mem._numel(s) for n, s in shapes if n in excluded or mem._numel(s) <= seg)
    assert sp["unsliced_trainable"] == whole and sp["sliced_frozen"] == sp["whole_frozen"] == 0
    assert sp["sliced_trainable"] + whole == count_parameters(arch)["total"]
    frozen = stage3_split(arch, train_vision=False, segment_size=seg)
    assert frozen["sliced_frozen"] + frozen["whole_frozen"] == count_parameters(arch)["vision"]


@pytest.mark.parametrize("arch", [QWEN2_5_VL_3B, QWEN2_5_VL_7B], ids=lambda a: a.name)
def test_distributed_stage3_unsliced_terms_appear(arch):
    sp = stage3_split(arch)
    v, h = arch.vocab_size, arch.hidden_size
    # the tied 3B keeps its embedding whole; the 7B its LM head (its embedding is sliced)
    assert sp["unsliced_trainable"] >= v * h
    assert sp["unsliced_trainable"] < v * h + 40e6  # plus norms, biases, small k/v projections
    b = memory_budget(arch, 3, W)
    per_rank = sp["sliced_trainable"] / 8 + sp["unsliced_trainable"]
    assert b.master == 4 * per_rank and b.adam == 8 * per_rank and b.grads == 2 * per_rank
    assert b.weights == 2 * per_rank  # every parameter is trainable in the REC recipe
    # ZeRO-3's 16 P / N misses 16 bytes x 7/8 of every unsliced element on every rank
    p = count_parameters(arch)["total"]
    states = b.weights + b.master + b.adam + b.grads
    assert states - 16 * p / 8 == pytest.approx(16 * sp["unsliced_trainable"] * 7 / 8)
    assert states - 16 * p / 8 > 4 * GB
    # 3B: k_proj / v_proj (2048 x 256 = 2**19) stay whole; 7B: 3584 x 512 > 2**20 are sliced
    small = dict(parameter_shapes(arch))["model.layers.0.self_attn.k_proj.weight"]
    assert (mem._numel(small) <= mem.SEGMENT_SIZE) == (arch is QWEN2_5_VL_3B)


def test_distributed_stage1_is_stage2_with_a_greedy_split():
    for arch in (QWEN2_5_VL_3B, QWEN2_5_VL_7B):
        s1, s2 = memory_budget(arch, 1, W), memory_budget(arch, 2, W)
        assert s1.phases == s2.phases  # Paddle builds level "os" as "os_g"
        sizes = stage2_rank_elements(arch, 8)
        assert sum(sizes) == count_parameters(arch)["total"]
        assert s2.master == 4 * max(sizes) and s2.grads == 2 * max(sizes)
    # whole 545M-element embedding and LM head make the 7B split uneven: the busiest rank owns > P / 8 * 1.3
    assert max(stage2_rank_elements(QWEN2_5_VL_7B, 8)) > 1.3 * count_parameters(QWEN2_5_VL_7B)["total"] / 8


def test_distributed_offload_is_stage3_only():
    with pytest.raises(ValueError, match="stage-3 only"):
        memory_budget(QWEN2_5_VL_3B, 2, dataclasses.replace(W, sharding_offload=True))
    on, off = memory_budget(QWEN2_5_VL_7B, 3, W), memory_budget(QWEN2_5_VL_7B, 3, dataclasses.replace(
        W, sharding_offload=True))
    assert off.master == off.adam == 0 and off.phases["policy backward"] < on.phases["policy backward"]


# ----- the budget -----

def test_distributed_budget_phases():
    a, p = QWEN2_5_VL_7B, count_parameters(QWEN2_5_VL_7B)["total"]
    for stage in mem.STAGES:
        b = memory_budget(a, stage, W)
        assert set(b.phases) == set(mem.PHASES)
        assert b.total == max(b.phases.values())
        # the columns add up to the policy-backward phase
        assert b.phases["policy backward"] == pytest.approx(b.weights + b.master + b.adam + b.grads + b.reference
                                                            + b.activations)
        off = memory_budget(a, stage, dataclasses.replace(W, ref_offload=True))
        assert off.reference == 0 and b.reference == 2 * p
        assert off.phases["policy backward"] == pytest.approx(b.phases["policy backward"] - 2 * p)
        # an offloaded reference still occupies the GPU during its own pass
        assert off.phases["reference pass"] == pytest.approx(b.phases["reference pass"])
    s0 = memory_budget(a, 0, W)
    assert s0.weights + s0.master + s0.adam + s0.grads == 16 * p  # stage 0: 2 + 4 + 8 + 2 bytes per parameter
    # B12 fixed: one fp32 gradient and its square at a time (the largest: the 545M-element embedding)
    assert s0.phases["gradient reduce"] - s0.phases["policy backward"] + s0.activations == 8 * a.vocab_size * \
        a.hidden_size
    # R4(d): _hf_state now moves each tensor to the host first; the audited code's device copies would add this
    audited = memory_budget(a, 0, dataclasses.replace(W, save_transposes_on_device=True))
    assert audited.phases["save"] - s0.phases["save"] == 2 * mem.linear_weight_numel(a)
    assert s0.phases["save"] == s0.phases["rollout"] - mem.rollout_bytes(a, W)  # nothing extra on the device
    # stage 3 gathers one parameter at a time to the host (the 7B's largest sliced one: the embedding)
    s3, st3 = memory_budget(a, 3, W), mem._states(a, 3, W)
    between_steps = s3.phases["rollout"] - mem.rollout_bytes(a, W) - st3["in_flight"]  # rollouts gather too
    assert s3.phases["save"] - between_steps == 2 * a.vocab_size * a.hidden_size
    # the conclusions the doc draws
    assert memory_budget(a, 0, W).total > 80 * GB
    assert memory_budget(a, 2, W).total < 80 * GB
    with pytest.raises(ValueError, match="stage"):
        memory_budget(QWEN2_5_VL_3B, 4)


def test_distributed_rollout_packs_nothing_on_gpu():
    # R4(e): the packed q/k/v/gate/up copies are CPU-only now; this is what they would add
    assert mem.packed_projection_bytes(QWEN2_5_VL_3B) / GB == pytest.approx(3.6, abs=0.05)
    assert mem.packed_projection_bytes(QWEN2_5_VL_7B) / GB == pytest.approx(8.5, abs=0.05)
    b = memory_budget(QWEN2_5_VL_3B, 0, W)
    assert b.phases["rollout"] < b.phases["policy backward"]


def test_distributed_host_memory_of_an_offloaded_reference():
    p = count_parameters(QWEN2_5_VL_3B)["total"]
    off = dataclasses.replace(W, ref_offload=True)
    host = mem.host_memory(QWEN2_5_VL_3B, off)
    assert host["reference (steady)"] == 8 * 2 * p
    assert host["reference (loading)"] == 8 * 4 * p  # built in fp32 before the cast, on all 8 local ranks
    assert mem.host_memory(QWEN2_5_VL_3B, dataclasses.replace(off, ref_built_in_fp32=False))[
        "reference (loading)"] == 8 * 2 * p
    assert mem.host_memory(QWEN2_5_VL_3B, W)["reference (steady)"] == 0


@pytest.mark.slow
def test_distributed_doc_tables_are_the_computed_ones():
    doc = DOC.read_text(encoding="utf-8")
    for name, table in mem.doc_tables().items():
        assert table in doc, f"docs/distributed.md: the {name!r} table differs from memory.py's; " \
                             "paste the output of python -m paddlemix_r1.distributed.memory"
    assert budget_table() in doc
    assert all(f"- {item}" in mem.doc_tables()["unverified"] for item in mem.UNVERIFIED)


def test_distributed_doc_conclusions():
    """What the prose of docs/distributed.md reads off the tables."""
    cap = 80 * GB
    off = dataclasses.replace(W, ref_offload=True)
    b3 = {s: memory_budget(QWEN2_5_VL_3B, s, W) for s in mem.STAGES}
    b7 = {s: memory_budget(QWEN2_5_VL_7B, s, W) for s in mem.STAGES}
    assert b3[0].total > cap  # 3B, stage 0, reference on the GPU: does not fit
    assert 0 < cap - memory_budget(QWEN2_5_VL_3B, 0, off).total < 10 * GB  # offloaded: a few GB left
    assert b3[2].total < cap / 2 and b3[3].total < b3[2].total
    assert b3[3].master > b3[2].master  # the whole tied embedding's fp32 state on every rank
    assert b7[0].total > cap and memory_budget(QWEN2_5_VL_7B, 0, off).total > cap
    assert 0 < cap - b7[2].total < 10 * GB
    assert b7[3].total == min(b.total for b in b7.values())  # stage 3 leaves the 7B the most room
    share = max(stage2_rank_elements(QWEN2_5_VL_7B, 8)) / (count_parameters(QWEN2_5_VL_7B)["total"] / 8)
    assert 1.35 < share < 1.5  # "about 1.4 times an even share"
    # activations: the vision tower and the LM-head backward dominate with recompute
    t = activation_terms(QWEN2_5_VL_3B, W)
    assert t["vision_kept"] > t["decoder_kept"] and max(t, key=lambda k: t[k] if k.startswith("peak") else -1) \
        == "peak: LM-head backward"
    sh = memory_budget(QWEN2_5_VL_3B, 3, dataclasses.replace(W, sharding_offload=True))
    assert sh.peak_phase == "startup"


@pytest.mark.slow
def test_distributed_doc_regenerates_to_itself():
    doc = DOC.read_text(encoding="utf-8")
    assert mem.update_doc(doc) == doc
    with pytest.raises(ValueError, match="no line"):
        mem.update_doc("no markers here")
