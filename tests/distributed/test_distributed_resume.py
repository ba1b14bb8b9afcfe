"""Two-process runs with sampling (per-rank seeds): the prompt stream over ranks and steps, exact
resume in 2-process mode, and resuming the 2-process checkpoint in one process.

Scenario (run once for the module): 6 prompts, 2 per rank per step, so 4 per step and epochs end
in the middle of a step; 4 steps with a checkpoint every 2, cosine schedule with warmup.
- full:    2 processes, 4 steps uninterrupted;
- split:   2 processes, stopped after the step-2 checkpoint, then a new 2-process job resumes it;
- single:  1 process with 4 prompts per step resumes split's step-2 checkpoint (other world size).
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from launching import base_cfg, check, load_dump, run_worker

pytestmark = pytest.mark.slow  # two-process paddle.distributed.launch runs

G = 4
N_PROMPTS = 6


def _cfg(tiny, out, **kw):
    settings = {"num_train_samples": N_PROMPTS, "prompts_per_step": 2, "max_steps": 4, "save_steps": 2,
                "lr_scheduler_type": "cosine", "warmup_steps": 1, "num_generations": G}
    return base_cfg(tiny, out, **{**settings, **kw})


@pytest.fixture(scope="module")
def runs(tiny_ckpt, tmp_path_factory):
    w = tmp_path_factory.mktemp("resume")
    first = {"runs": [{"cfg": _cfg(tiny_ckpt, w / "full"), "dump": str(w / "full" / "dump")},
                      {"cfg": _cfg(tiny_ckpt, w / "split"), "num_steps": 2, "dump": str(w / "split" / "part1")}]}
    check(run_worker(first, w, "first", world=2))
    shutil.copytree(w / "split" / "checkpoint-2", w / "copy-checkpoint-2")  # the resumed job prunes split/
    single = _cfg(tiny_ckpt, w / "single", prompts_per_step=4, resume_from_checkpoint=str(w / "copy-checkpoint-2"))
    check(run_worker({"runs": [{"cfg": single, "dump": str(w / "single" / "dump")}]}, w, "single", world=1))
    resumed = _cfg(tiny_ckpt, w / "split", resume_from_checkpoint="latest")
    check(run_worker({"runs": [{"cfg": resumed, "dump": str(w / "split" / "part2")}]}, w, "second", world=2))
    return w


def _stream(info_by_rank: list[dict]) -> dict[int, list[str]]:
    """{step: prompt ids of the step in global-stream order}: rank r holds positions r, r + W, ..."""
    world = len(info_by_rank)
    out: dict[int, list[str]] = {}
    for info in info_by_rank:
        for call in info["rollouts"]:
            ids = out.setdefault(call["step"], [None] * (len(call["ids"]) * world))
            ids[call["rank"]::world] = call["ids"]
    return out


def test_distributed_sampler_covers_each_prompt_once_per_epoch_with_groups_intact(runs):
    infos = [load_dump(runs / "full" / "dump", r)[1] for r in (0, 1)]
    for r, info in enumerate(infos):
        assert [c["step"] for c in info["rollouts"]] == [0, 1, 2, 3]
        for call in info["rollouts"]:
            assert call["rank"] == r
            assert call["completions"] == G * len(call["ids"])  # every completion of a prompt on its rank
    stream = _stream(infos)
    for step in range(4):
        rank0, rank1 = stream[step][0::2], stream[step][1::2]
        assert not set(rank0) & set(rank1)  # distinct prompts across ranks within a step
    flat = [i for step in range(4) for i in stream[step]]  # 16 = 2 epochs of 6 + 4
    for epoch in range(2):
        chunk = flat[epoch * N_PROMPTS:(epoch + 1) * N_PROMPTS]
        assert sorted(chunk) == sorted(f"counting/3/{i}" for i in range(N_PROMPTS)), chunk
    assert len(set(flat[2 * N_PROMPTS:])) == 4
    assert flat[:N_PROMPTS] != flat[N_PROMPTS:2 * N_PROMPTS]  # reshuffled each epoch


def test_distributed_resume_continues_exactly(runs):
    for rank in (0, 1):
        full, full_info = load_dump(runs / "full" / "dump", rank)
        part1 = load_dump(runs / "split" / "part1", rank)[1]
        resumed, resumed_info = load_dump(runs / "split" / "part2", rank)
        assert part1["step"] == 2 and resumed_info["step"] == 4
        for name in full:
            np.testing.assert_array_equal(resumed[name], full[name], err_msg=f"rank {rank}: {name}")
        # same prompts in the same order on each rank after the resume
        assert resumed_info["rollouts"] == [c for c in full_info["rollouts"] if c["step"] >= 2]
        assert [h["reward"] for h in resumed_info["history"]] == [h["reward"] for h in full_info["history"]]
    r0 = load_dump(runs / "split" / "part2", 0)[0]
    r1 = load_dump(runs / "split" / "part2", 1)[0]
    assert all(np.array_equal(r0[n], r1[n]) for n in r0)  # replicas stay identical


def test_distributed_checkpoint_resumes_with_another_world_size(runs):
    """The 2-process checkpoint loads in one process, which continues the same global prompt stream."""
    full_stream = _stream([load_dump(runs / "full" / "dump", r)[1] for r in (0, 1)])
    _, single = load_dump(runs / "single" / "dump", 0)
    assert single["world_size"] == 1 and single["step"] == 4
    assert {c["step"]: c["ids"] for c in single["rollouts"]} == {2: full_stream[2], 3: full_stream[3]}
