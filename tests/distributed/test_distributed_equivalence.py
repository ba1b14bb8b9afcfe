"""One optimizer step with 2 ranks x B/2 prompts equals one step of one process with B prompts.

Completions are injected (fixed token ids per prompt row and completion index, worker.py), so both
runs train on identical data; the reference model (beta > 0) is on. Two settings make the
comparison sharp rather than lenient:
- ``adam_epsilon=1e-4``: Adam's first step is lr * g / (|g| + eps). With eps = 1e-8 a coordinate
  whose gradient is ~1e-8 turns fp32 rounding differences of the gradient (the two runs sum in a
  different order) into moves of ~lr/10 (measured: single elements off by 3e-6 at lr 1e-3). A
  larger eps keeps the update proportional to g there; what is tested is the gradient.
- ``max_grad_norm=0`` (no clipping): the update then depends on the gradient's scale, so a sum
  instead of a mean over ranks would show in the parameters, not only in the logged grad_norm.
"""

from __future__ import annotations

import numpy as np
import pytest
from launching import base_cfg, check, load_dump, run_worker

from paddlemix_r1.models import from_pretrained

pytestmark = pytest.mark.slow  # two-process paddle.distributed.launch runs


def _spec(tiny: str, work, tag: str, prompts_per_step: int) -> dict:
    runs = []
    for loss_type in ("grpo", "dapo"):
        out = work / f"{tag}_{loss_type}"
        cfg = base_cfg(tiny, out, prompts_per_step=prompts_per_step, loss_type=loss_type, adam_epsilon=1e-4,
                       max_grad_norm=0.0, max_steps=1)
        runs.append({"cfg": cfg, "inject": True, "dump": str(out / "dump")})
    return {"runs": runs}


@pytest.fixture(scope="module")
def runs(tiny_ckpt, tmp_path_factory):
    work = tmp_path_factory.mktemp("equivalence")
    check(run_worker(_spec(tiny_ckpt, work, "single", 4), work, "single", world=1))
    check(run_worker(_spec(tiny_ckpt, work, "multi", 2), work, "multi", world=2))
    return work


@pytest.mark.parametrize("loss_type", ["grpo", "dapo"])
def test_distributed_one_step_equals_single_process(runs, tiny_ckpt, loss_type):
    single, s_info = load_dump(runs / f"single_{loss_type}" / "dump", 0)
    rank0, r0_info = load_dump(runs / f"multi_{loss_type}" / "dump", 0)
    rank1, r1_info = load_dump(runs / f"multi_{loss_type}" / "dump", 1)

    # The same 4 prompts: rank r took every other prompt of the global step, with all 4 completions each.
    (s_roll,), (r0_roll,), (r1_roll,) = s_info["rollouts"], r0_info["rollouts"], r1_info["rollouts"]
    assert r0_roll["ids"] == s_roll["ids"][0::2] and r1_roll["ids"] == s_roll["ids"][1::2]
    assert r0_roll["completions"] == r1_roll["completions"] == 2 * 4

    for name in single:
        np.testing.assert_array_equal(rank0[name], rank1[name], err_msg=f"replicas differ: {name}")
        np.testing.assert_allclose(rank0[name], single[name], atol=1e-6, rtol=0, err_msg=name)
    # ... while the step itself moved the weights by far more than that tolerance.
    initial = {n: p.numpy() for n, p in from_pretrained(tiny_ckpt).named_parameters()}
    assert max(float(np.abs(single[n] - initial[n]).max()) for n in single) > 1e-4

    hs, h0, h1 = s_info["history"][0], r0_info["history"][0], r1_info["history"][0]
    assert h0 == h1  # metrics are reduced: every rank logs the same numbers
    np.testing.assert_allclose(h0["grad_norm"], hs["grad_norm"], rtol=1e-5)
    np.testing.assert_allclose(h0["loss"], hs["loss"], rtol=1e-5, atol=1e-7)
    for key in ("reward", "reward_std", "completion_length/mean", "kl"):
        np.testing.assert_allclose(h0[key], hs[key], rtol=1e-6, atol=1e-9, err_msg=key)
