"""The memory budget arithmetic behind docs/distributed.md."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from paddlemix_r1.distributed.memory import (
    GB,
    QWEN2_5_VL_3B,
    QWEN2_5_VL_7B,
    Architecture,
    Workload,
    activation_bytes,
    budget_table,
    count_parameters,
    memory_budget,
)
from paddlemix_r1.models import build_tiny_checkpoint, from_pretrained

DOC = Path(__file__).resolve().parents[2] / "docs" / "distributed.md"


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl"])
@pytest.mark.parametrize("tie", [True, False])
def test_distributed_parameter_count_matches_the_model_classes(tmp_path, family, tie):
    model = from_pretrained(build_tiny_checkpoint(str(tmp_path), family=family, tie_word_embeddings=tie))
    counted = count_parameters(Architecture.from_model_config(model.config))
    assert counted["total"] == sum(int(p.numel()) for p in model.parameters())
    assert counted["vision"] == sum(int(p.numel()) for p in model.visual.parameters())


def test_distributed_parameter_counts_of_the_published_models():
    # Totals of the published safetensors: 3,754,622,976 (3B, tied head) and 8,292,166,656 (7B).
    assert count_parameters(QWEN2_5_VL_3B)["total"] == 3_754_622_976
    assert count_parameters(QWEN2_5_VL_7B)["total"] == 8_292_166_656


def test_distributed_budget_arithmetic():
    w = Workload(num_gpus=8)
    p = count_parameters(QWEN2_5_VL_7B)["total"]
    act = activation_bytes(QWEN2_5_VL_7B, w)
    expected_states = {0: 16 * p, 1: 4 * p + 12 * p / 8, 2: 2 * p + 14 * p / 8, 3: 16 * p / 8}
    for stage, states in expected_states.items():
        b = memory_budget(QWEN2_5_VL_7B, stage, w)
        assert b.weights + b.master + b.adam + b.grads == pytest.approx(states)
        assert b.reference == 2 * p and b.activations == act
        assert b.total == pytest.approx(states + 2 * p + act)
        off = memory_budget(QWEN2_5_VL_7B, stage, dataclasses.replace(w, ref_offload=True))
        assert off.total == pytest.approx(b.total - 2 * p)
    # recompute keeps one h-vector per token and layer instead of every layer's working set
    tokens = 8 * (1024 + 256)
    no_rc = activation_bytes(QWEN2_5_VL_7B, dataclasses.replace(w, recompute=False))
    working = tokens * (16 * 3584 + 4 * 18944) * 2
    assert no_rc - act == pytest.approx(working * 28 - (tokens * 3584 * 2 * 28 + working))
    # the conclusions the doc draws
    assert memory_budget(QWEN2_5_VL_7B, 0, w).total > 80 * GB
    assert memory_budget(QWEN2_5_VL_7B, 3, w).total < 40 * GB
    with pytest.raises(ValueError, match="stage"):
        memory_budget(QWEN2_5_VL_3B, 4)


def test_distributed_doc_table_is_the_computed_one():
    assert budget_table() in DOC.read_text(encoding="utf-8")
