"""DPO losses against TRL 1.16's DPOTrainer: value, gradient w.r.t. the summed log-probs, metrics.

TRL's own ``_compute_loss`` runs in a subprocess on the same numbers (trl_dpo_reference.py)."""

from __future__ import annotations

import numpy as np
import paddle
import pytest

from paddlemix_r1.grpo.dpo import combine_steps, dpo_loss

# (loss_type, beta, label_smoothing, sft_weight): sft_weight > 0 is TRL's loss_type [type, "sft"]
CASES = [
    ("sigmoid", 0.1, 0.0, 0.0), ("sigmoid", 0.5, 0.0, 0.0), ("sigmoid", 2.0, 0.0, 0.0),
    ("robust", 0.1, 0.1, 0.0), ("robust", 1.0, 0.3, 0.0),
    ("hinge", 0.1, 0.0, 0.0), ("hinge", 1.0, 0.0, 0.0),
    ("ipo", 0.1, 0.0, 0.0), ("ipo", 0.5, 0.0, 0.0),
    ("sigmoid", 0.1, 0.0, 1.0), ("sigmoid", 1.0, 0.0, 0.2), ("ipo", 0.5, 0.0, 0.5),
]


def _numbers(seed: int, pairs: int = 6) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "logps": rng.normal(-20.0, 8.0, 2 * pairs),  # (2P,) [chosen; rejected]
        "ref_chosen_logps": rng.normal(-20.0, 8.0, pairs),
        "ref_rejected_logps": rng.normal(-20.0, 8.0, pairs),
        "lengths": rng.integers(1, 30, 2 * pairs),
    }


@pytest.fixture(scope="module")
def trl(run_trl_dpo) -> list[dict]:
    cases = [{"loss_type": lt, "beta": beta, "label_smoothing": ls, "sft_weight": sft, **_numbers(i)}
             for i, (lt, beta, ls, sft) in enumerate(CASES)]
    return run_trl_dpo(cases)


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(CASES)), ids=[f"{lt}-b{b}-ls{ls}-sft{w}" for lt, b, ls, w in CASES])
def test_value_gradient_and_metrics_equal_trl(trl, index: int) -> None:
    loss_type, beta, ls, sft = CASES[index]
    n = _numbers(index)
    pairs = len(n["ref_chosen_logps"])
    logps = paddle.to_tensor(n["logps"], dtype="float64", stop_gradient=False)  # (2P,)
    lengths = paddle.to_tensor(n["lengths"])
    loss, metrics = dpo_loss(logps[:pairs], logps[pairs:], paddle.to_tensor(n["ref_chosen_logps"]),
                             paddle.to_tensor(n["ref_rejected_logps"]), beta=beta, loss_type=loss_type,
                             label_smoothing=ls, chosen_lengths=lengths[:pairs], rejected_lengths=lengths[pairs:],
                             sft_weight=sft)
    loss.backward()
    ref = trl[index]
    np.testing.assert_allclose(float(loss), ref["loss"], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(logps.grad.numpy(), ref["grad"], rtol=1e-9, atol=1e-12)
    assert set(metrics) == set(ref["metrics"])
    for key, value in ref["metrics"].items():
        np.testing.assert_allclose(metrics[key], value, rtol=1e-6, atol=1e-9, err_msg=key)


def test_sigmoid_label_smoothing_is_conservative_dpo() -> None:
    """ε > 0 on ``sigmoid``: -(1-ε) log σ(βΔ) - ε log σ(-βΔ), the form LLaMA-Factory trains with."""
    delta = np.array([0.7, -1.3, 4.0])
    zeros = paddle.zeros([3], dtype="float64")
    loss, _ = dpo_loss(paddle.to_tensor(delta), zeros, zeros, zeros, beta=0.5, label_smoothing=0.2)

    def log_sigmoid(x: np.ndarray) -> np.ndarray:
        return -np.log1p(np.exp(-x))

    expected = np.mean(-0.8 * log_sigmoid(0.5 * delta) - 0.2 * log_sigmoid(-0.5 * delta))
    np.testing.assert_allclose(float(loss), expected, rtol=1e-12)


def test_step_level_combination_weights_each_step() -> None:
    z = paddle.zeros([2], dtype="float64")
    box = dpo_loss(paddle.to_tensor([1.0, 2.0], dtype="float64"), z, z, z)
    answer = dpo_loss(paddle.to_tensor([-1.0, 3.0], dtype="float64"), z, z, z)
    total, metrics = combine_steps({"box": box, "answer": answer}, {"box": 0.5, "answer": 0.5})
    np.testing.assert_allclose(float(total), 0.5 * float(box[0]) + 0.5 * float(answer[0]), rtol=1e-12)
    assert metrics["box/rewards/margins"] == pytest.approx(0.15)
    with pytest.raises(ValueError, match="answer"):
        combine_steps({"box": box, "answer": answer}, {"box": 1.0})


def test_bad_arguments_are_named() -> None:
    z = paddle.zeros([1])
    with pytest.raises(ValueError, match="loss_type"):
        dpo_loss(z, z, z, z, loss_type="kto")
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(z, z, z, z, beta=0.0)
    with pytest.raises(ValueError, match="chosen_lengths"):
        dpo_loss(z, z, z, z, loss_type="ipo")
