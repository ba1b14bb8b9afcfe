"""compute_advantages against TRL 1.16's GRPOTrainer._generate_and_score_completions.

TRL's method runs in a subprocess on the same rewards (see trl_reference.py); the advantages it
puts in its output batch are the reference.
"""

from __future__ import annotations

import numpy as np
import pytest

from paddlemix_r1.grpo.advantages import SCALE_REWARDS, compute_advantages


def make_case(name: str, rewards: np.ndarray, num_generations: int, scale_rewards: str, dtype: str) -> dict:
    return {
        "kind": "advantages",
        "id": f"{name}-G{num_generations}-{scale_rewards}-{dtype}",
        "rewards": np.asarray(rewards, dtype=np.float64),
        "num_generations": num_generations,
        "scale_rewards": scale_rewards,
        "dtype": dtype,
    }


rng = np.random.default_rng(0)
CONTINUOUS = rng.uniform(0.0, 2.0, 5 * 4)  # 5 prompts x G = 4
BINARY = rng.integers(0, 2, 4 * 8).astype(np.float64)  # 4 prompts x G = 8, some groups constant
BINARY[:8] = 1.0  # an all-correct group
WITH_CONSTANT = np.concatenate([np.full(4, 0.1), rng.uniform(0, 1, 4), np.full(4, 0.7)])  # float 0.1 is inexact
UNSCORABLE = CONTINUOUS.copy()
UNSCORABLE[[1, 6, 7, 8, 9, 10, 11]] = np.nan  # one NaN; a group with one scorable reward; an all-NaN group

CASES = (
    [
        make_case(name, rewards, g, scale, dtype)
        for name, rewards, g in (("continuous", CONTINUOUS, 4), ("binary", BINARY, 8), ("constant", WITH_CONSTANT, 4))
        for scale in SCALE_REWARDS
        for dtype in ("float64", "float32")
    ]
    + [make_case("unscorable", UNSCORABLE, 4, scale, "float64") for scale in SCALE_REWARDS]
    + [make_case("single", CONTINUOUS[:6], 1, scale, "float64") for scale in SCALE_REWARDS]
)

# Identical float32 rewards whose float32 mean is off by an ulp (G = 8, 0.1 and 0.7).
ROUNDING = make_case("rounding", np.concatenate([np.full(8, 0.1), np.full(8, 0.7)]), 8, "group", "float32")


@pytest.fixture(scope="module")
def trl_results(run_trl) -> dict[str, np.ndarray]:
    cases = [*CASES, ROUNDING]
    return {case["id"]: result["advantages"] for case, result in zip(cases, run_trl(cases), strict=True)}


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_matches_trl(case: dict, trl_results: dict[str, np.ndarray]) -> None:
    ours = compute_advantages(case["rewards"], case["num_generations"], case["scale_rewards"])
    ref = trl_results[case["id"]]
    # float32 (what TRL uses in training): rounding at ~1e-7 relative. float64: TRL's nanstd computes
    # its Bessel factor count / (count - 1) from integer tensors, i.e. in float32 (4/3 -> 1.33333337),
    # so even a float64 TRL run carries ~1e-8 relative error. Constant groups: TRL divides the rounding
    # noise of (r - mean) by (0 + 1e-4); we return exactly 0 there.
    atol = 1e-5 if case["dtype"] == "float32" else 1e-7
    np.testing.assert_allclose(ours, ref, rtol=0, atol=atol)
    assert np.isfinite(ours).all()


@pytest.mark.parametrize("scale_rewards", SCALE_REWARDS)
def test_identical_rewards_give_exactly_zero(scale_rewards: str) -> None:
    rewards = np.concatenate([np.full(8, 0.1), np.full(8, 1.0), [0.0, 1.0] * 4])
    adv = compute_advantages(rewards, 8, scale_rewards)
    assert not np.isnan(adv).any()
    assert (adv[:16] == 0.0).all()
    assert (adv[16:] != 0.0).all()


@pytest.mark.slow
def test_constant_groups_are_exactly_zero_where_trl_leaves_rounding_noise(trl_results) -> None:
    ours = compute_advantages(ROUNDING["rewards"], 8, "group")
    trl = trl_results[ROUNDING["id"]]
    assert (ours == 0.0).all()
    # TRL: (r - mean) is one float32 ulp, divided by (std 0 + 1e-4): ~7e-5 and ~6e-4, not NaN.
    assert np.isfinite(trl).all() and 1e-6 < np.abs(trl).max() < 1e-3


def test_group_scaling_uses_the_unbiased_std() -> None:
    adv = compute_advantages([0.0, 1.0], 2, "group", eps=0.0)
    # Bessel: std of {0, 1} is sqrt(0.5), so the advantages are -+0.5 / sqrt(0.5).
    np.testing.assert_allclose(adv, [-np.sqrt(0.5), np.sqrt(0.5)])


def test_batch_scaling_keeps_the_group_baseline() -> None:
    rewards = np.array([0.0, 1.0, 10.0, 11.0])
    adv = compute_advantages(rewards, 2, "batch", eps=0.0)
    np.testing.assert_allclose(adv, np.array([-0.5, 0.5, -0.5, 0.5]) / np.std(rewards, ddof=1))


def test_invalid_inputs_raise() -> None:
    with pytest.raises(ValueError, match="scale_rewards"):
        compute_advantages([1.0, 0.0], 2, "std")
    with pytest.raises(ValueError, match="multiple of G"):
        compute_advantages([1.0, 0.0, 1.0], 2)
    with pytest.raises(ValueError, match="inf"):
        compute_advantages([1.0, np.inf], 2)
