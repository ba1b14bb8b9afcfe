"""grpo_loss against TRL 1.16's GRPOTrainer._compute_loss: value, gradient and logged metrics.

TRL's own method runs in a subprocess on the same numbers (see trl_reference.py for how it is
called); every case is compared at 1e-5 absolute for the loss and for d loss / d per_token_logps.
"""

from __future__ import annotations

import itertools

import numpy as np
import paddle
import pytest

from paddlemix_r1.grpo.loss import LOSS_REDUCTIONS, grpo_loss

TOL = 1e-5
LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")
EPSILONS = {"sym": (0.2, 0.2), "asym": (0.2, 0.28)}
# Completion lengths of the 6 rows of a batch padded to T = 7; one empty completion (TRL's clamps
# keep it at zero loss and its NaN per-sequence clip fraction out of low_min / high_max).
LENGTHS = (7, 3, 5, 0, 1, 6)
MAX_COMPLETION_LENGTH = 8


def make_case(
    seed: int,
    loss_type: str,
    beta: float,
    eps: str,
    with_old: bool,
    dtype: str = "float32",
    num_items_in_batch: int | None = None,
) -> dict:
    rng = np.random.default_rng(seed)
    batch, width = len(LENGTHS), max(LENGTHS)
    logps = rng.normal(-1.5, 0.8, (batch, width)).clip(max=-1e-3)
    # Per-column log ratios: +-0.6 lies outside [1 - 0.2, 1 + 0.28] on both sides, +-0.05 inside.
    log_ratio = np.array([0.6, -0.6, 0.05, 0.6, -0.6, -0.05, 0.3]) + rng.normal(0.0, 0.05, (batch, width))
    old = logps - log_ratio if with_old else None
    ref = logps + rng.normal(0.0, 0.3, (batch, width)) if beta != 0.0 else None
    # Mixed signs so both clip branches bind; row 2 is a group-constant completion (A = 0).
    advantages = np.array([1.0, -1.0, 0.0, 1.0, -1.0, 1.0]) * rng.uniform(0.3, 1.5, batch)
    mask = (np.arange(width)[None, :] < np.asarray(LENGTHS)[:, None]).astype(np.int64)
    eps_low, eps_high = EPSILONS[eps]
    return {
        "kind": "loss",
        "id": f"{loss_type}-beta{beta}-{eps}-{'old' if with_old else 'noold'}-{dtype}"
        + ("" if num_items_in_batch is None else f"-items{num_items_in_batch}"),
        "dtype": dtype,
        "per_token_logps": logps.astype(dtype),
        "old_per_token_logps": None if old is None else old.astype(dtype),
        "ref_per_token_logps": None if ref is None else ref.astype(dtype),
        "advantages": advantages.astype(dtype),
        "completion_mask": mask,
        "loss_type": loss_type,
        "beta": beta,
        "epsilon_low": eps_low,
        "epsilon_high": eps_high,
        "max_completion_length": MAX_COMPLETION_LENGTH,
        "num_items_in_batch": num_items_in_batch,
    }


CASES = [
    make_case(seed, loss_type, beta, eps, with_old)
    for seed, (loss_type, beta, eps, with_old) in enumerate(
        itertools.product(LOSS_TYPES, (0.0, 0.04), EPSILONS, (True, False))
    )
] + [
    make_case(100, "grpo", 0.04, "asym", True, dtype="float64"),
    make_case(101, "dapo", 0.04, "asym", True, dtype="float64"),
    # dapo's normalizer is the active-token count of the global batch, here 3x the local one.
    make_case(102, "dapo", 0.04, "sym", True, num_items_in_batch=3 * sum(LENGTHS)),
]


@pytest.fixture(scope="module")
def trl_results(run_trl) -> dict[str, dict]:
    return {case["id"]: result for case, result in zip(CASES, run_trl(CASES), strict=True)}


def _tensor(x: np.ndarray | None) -> paddle.Tensor | None:
    return None if x is None else paddle.to_tensor(x)


def run_ours(case: dict) -> tuple[float, np.ndarray, dict[str, float]]:
    logps = paddle.to_tensor(case["per_token_logps"], stop_gradient=False)
    loss, metrics = grpo_loss(
        logps,
        _tensor(case["old_per_token_logps"]),
        _tensor(case["ref_per_token_logps"]),
        _tensor(case["advantages"]),
        _tensor(case["completion_mask"]),
        loss_type=case["loss_type"],
        epsilon_low=case["epsilon_low"],
        epsilon_high=case["epsilon_high"],
        beta=case["beta"],
        max_completion_length=case["max_completion_length"],
        num_items_in_batch=case["num_items_in_batch"],
    )
    loss.backward()
    return float(loss), logps.grad.numpy(), {k: float(v) for k, v in metrics.items()}


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_matches_trl(case: dict, trl_results: dict[str, dict]) -> None:
    ref = trl_results[case["id"]]
    loss, grad, metrics = run_ours(case)

    assert abs(loss - ref["loss"]) <= TOL, (loss, ref["loss"])
    np.testing.assert_allclose(grad, ref["grad"], rtol=0, atol=TOL)
    assert np.abs(ref["grad"]).max() > 1e-3  # the comparison is not between two zero gradients
    for name, value in ref["metrics"].items():
        assert metrics[name] == pytest.approx(value, abs=1e-6, nan_ok=True), name
    if case["old_per_token_logps"] is not None:
        # The cases are built so that both clip branches bind somewhere.
        assert ref["metrics"]["clip_ratio/low_mean"] > 0 and ref["metrics"]["clip_ratio/high_mean"] > 0


def test_loss_types_are_the_dict_keys() -> None:
    assert set(LOSS_REDUCTIONS) == set(LOSS_TYPES)


def test_without_old_logps_the_gradient_is_the_plain_policy_gradient() -> None:
    # ratio == 1, nothing clipped: d loss / d logp = -A * mask / normalizer (bnpo: active tokens).
    case = make_case(7, "bnpo", 0.0, "sym", with_old=False)
    _, grad, metrics = run_ours(case)
    mask = case["completion_mask"]
    expected = -case["advantages"][:, None] * mask / mask.sum()
    np.testing.assert_allclose(grad, expected, rtol=0, atol=1e-7)
    assert metrics["clip_ratio/region_mean"] == 0.0


def test_kl_is_logged_for_beta_zero_and_does_not_enter_the_loss() -> None:
    case = make_case(8, "grpo", 0.04, "sym", with_old=True)
    logps = paddle.to_tensor(case["per_token_logps"])
    args = [_tensor(case[k]) for k in ("old_per_token_logps", "ref_per_token_logps", "advantages", "completion_mask")]
    loss_with_ref, metrics = grpo_loss(logps, *args, beta=0.0)
    args[1] = None
    loss_without_ref, metrics_without = grpo_loss(logps, *args, beta=0.0)
    assert float(loss_with_ref) == float(loss_without_ref)
    assert float(metrics["kl"]) > 0 and "kl" not in metrics_without


def test_dapo_normalizer_may_be_a_tensor() -> None:
    case = make_case(9, "dapo", 0.0, "sym", with_old=True)
    loss_int, _, _ = run_ours({**case, "num_items_in_batch": 40})
    loss_tensor, _, _ = run_ours({**case, "num_items_in_batch": paddle.to_tensor(40)})
    loss_local, _, _ = run_ours(case)
    assert loss_int == loss_tensor
    assert loss_int == pytest.approx(loss_local * sum(LENGTHS) / 40, rel=1e-6)


def test_errors_are_explicit() -> None:
    case = make_case(10, "grpo", 0.04, "sym", with_old=True)
    logps, old, ref, adv, mask = (
        _tensor(case[k])
        for k in ("per_token_logps", "old_per_token_logps", "ref_per_token_logps", "advantages", "completion_mask")
    )
    with pytest.raises(ValueError, match="ref_per_token_logps"):
        grpo_loss(logps, old, None, adv, mask, beta=0.04)
    with pytest.raises(ValueError, match="max_completion_length"):
        grpo_loss(logps, old, ref, adv, mask, loss_type="dr_grpo")
    with pytest.raises(ValueError, match="Unknown loss_type"):
        grpo_loss(logps, old, ref, adv, mask, loss_type="cispo")
    with pytest.raises(ValueError, match="advantages"):
        grpo_loss(logps, old, ref, adv[:3], mask)
    with pytest.raises(ValueError, match="completion_mask"):
        grpo_loss(logps, old, ref, adv, mask[:, :3])
