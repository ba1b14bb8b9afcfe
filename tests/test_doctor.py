"""``paddlemix-r1 doctor`` on this CPU machine: the table, the JSON report, GPU checks skipped with their
reason, the exit code, and each check's logic tested both ways (a bf16 rotary buffer, a contract violation,
a kernel that disagrees with its reference, two Paddle wheels)."""

from __future__ import annotations

import argparse
import contextlib
import json

import numpy as np
import paddle
import pytest

from paddlemix_r1 import cli, doctor
from paddlemix_r1.families import VISION_FAMILIES
from paddlemix_r1.ops import dispatch, gpu_kernels

# The whole command runs its GPU checks where there is a GPU (minutes): there, run it by hand.
cpu_machine = pytest.mark.skipif(doctor.gpu_available(), reason="a GPU machine: run paddlemix-r1 doctor by hand")


def _report(path) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


@cpu_machine
def test_doctor_command_prints_the_table_and_writes_the_report(tmp_path, capsys):
    path = tmp_path / "report.json"
    code = cli.main(["doctor", "--report", str(path)])
    out = capsys.readouterr().out
    doc = _report(path)
    names = [name for name, _ in doctor.checks(str(tmp_path), contracts=False)]
    assert [c["name"] for c in doc["checks"]] == names
    assert "check" in out and "status" in out and f"report: {path}" in out
    for line in ("build     Python", "cpu       ", "runtime   ", "gpus      ", "dispatch  "):
        assert line in out
    for c in doc["checks"]:
        assert c["status"] in doctor.STATUSES
        assert c["name"] in out
        assert isinstance(c["seconds"], float)
        if c["name"].startswith(("gpu_parity.", "gpu_grpo_step.", "gpu_memory.")) or c["name"] == "gpu_devices":
            assert c["status"] == "SKIP" and ("CPU build" in c["detail"] or "no GPU" in c["detail"]), c
    assert {f"gpu_parity.{op}" for op in ("attention", "rotary", "varlen_attention", "rms_norm", "swiglu")} <= set(names)
    assert {f"gpu_grpo_step.stage{s}" for s in range(4)} <= set(names)
    bad = any(c["status"] in ("FAIL", "ERROR") for c in doc["checks"])
    assert code == doc["exit_code"] == (1 if bad else 0)
    env = doc["environment"]
    assert env["build"]["paddle"] == paddle.__version__
    assert env["build"]["compiled_with_cuda"] is paddle.is_compiled_with_cuda()
    assert set(env["dispatch"]) == set(dispatch.ops())
    assert env["cpu"]["cores"] >= 1 and isinstance(env["cpu"]["avx2"], bool)
    assert doc["summary"] == {s: sum(c["status"] == s for c in doc["checks"]) for s in doctor.STATUSES}
    assert doc["complete"] is True


def test_exit_code_and_report_reflect_fail_and_error(tmp_path, monkeypatch, capsys):
    def boom():
        raise ValueError("broken check")

    fake = [("ok", lambda: doctor.Outcome("PASS", "fine")), ("skipped", lambda: doctor.Outcome("SKIP", "no GPU")),
            ("boom", boom), ("after", lambda: doctor.Outcome("PASS", "still ran"))]
    monkeypatch.setattr(doctor, "checks", lambda workdir, contracts: fake)
    monkeypatch.setattr(doctor, "collect_environment", lambda: {"fake": True})
    monkeypatch.setattr(doctor, "format_environment", lambda env: "env")
    path = tmp_path / "r.json"
    assert doctor.run(report=str(path)) == 1
    doc = _report(path)
    by = {c["name"]: c for c in doc["checks"]}
    assert by["boom"]["status"] == "ERROR" and "ValueError: broken check" in by["boom"]["detail"]
    assert "raise ValueError" in by["boom"]["traceback"]
    assert by["after"]["status"] == "PASS" and doc["exit_code"] == 1
    assert "problems:" in capsys.readouterr().out

    monkeypatch.setattr(doctor, "checks", lambda workdir, contracts: [fake[0], fake[1]])
    assert doctor.run(report=str(path)) == 0
    fake_fail = [("bad", lambda: doctor.Outcome("FAIL", "wrong"))]
    monkeypatch.setattr(doctor, "checks", lambda workdir, contracts: fake_fail)
    assert doctor.run(report=str(path)) == 1 and _report(path)["summary"]["FAIL"] == 1


class _Part(paddle.nn.Layer):
    def __init__(self, values, dtype):
        super().__init__()
        self.register_buffer("inv_freq", paddle.to_tensor(values).astype(dtype), persistable=False)


class _Model(paddle.nn.Layer):
    def __init__(self, dtype="float32", text=None, vision=None):
        super().__init__()
        self.model = _Part(np.array([1.0, 0.1, 0.01, 1e-3], "float32") if text is None else text, dtype)
        self.visual = _Part(np.array([1.0, 0.01], "float32") if vision is None else vision, dtype)


def test_rotary_buffer_check_both_ways():
    found, problems = doctor.rotary_buffer_problems(_Model("float32"), _Model("float32"))
    assert found == ["model.inv_freq", "visual.inv_freq"] and problems == []
    _, problems = doctor.rotary_buffer_problems(_Model("bfloat16"), _Model("float32"))
    assert problems == ["model.inv_freq is bfloat16, expected float32", "visual.inv_freq is bfloat16, expected float32"]
    # float32 again, but through bf16: the rounding stays (1e-3 is not a bf16 value)
    rounded = doctor.round_to_bf16(np.array([1.0, 0.1, 0.01, 1e-3], "float32"))
    _, problems = doctor.rotary_buffer_problems(_Model("float32", text=rounded), _Model("float32"))
    assert len(problems) == 1 and problems[0].startswith("model.inv_freq differs from the float32 load")
    _, problems = doctor.rotary_buffer_problems(paddle.nn.Layer())
    assert "the model has no .model" in problems and any("no inv_freq buffer" in p for p in problems)


def test_inv_freq_check_fails_for_a_load_that_casts_buffers(tmp_path, monkeypatch):
    import paddlemix_r1.models as models

    real = models.from_pretrained
    bf16_buffers = [b for _, b in real(doctor.tiny_checkpoint(str(tmp_path), "qwen2_vl"), dtype="bfloat16").named_buffers()
                    if b.dtype != paddle.float32]
    out = doctor.check_inv_freq(str(tmp_path))
    assert out.status == ("FAIL" if bf16_buffers else "PASS"), out.detail

    def load_with_layer_to(path, dtype="float32"):  # the load before the audit's B4 fix
        model = real(path, dtype="float32")
        if dtype != "float32":
            model.to(dtype=dtype)
        return model

    monkeypatch.setattr(models, "from_pretrained", load_with_layer_to)
    out = doctor.check_inv_freq(str(tmp_path))
    assert out.status == "FAIL"
    for family in VISION_FAMILIES:
        assert f"{family}: model.inv_freq is bfloat16" in out.detail and f"{family}: visual.inv_freq is bfloat16" in out.detail


def test_round_to_bf16_matches_paddle():
    x = np.random.default_rng(0).standard_normal(10000).astype("float32") * 100
    want = paddle.to_tensor(x).astype("bfloat16").astype("float32").numpy()
    np.testing.assert_array_equal(doctor.round_to_bf16(x), want)


def test_parity_comparison_passes_a_correct_kernel_and_fails_a_wrong_one(monkeypatch):
    """The GPU mode's comparison, run on CPU with kernels that exist here (Paddle's swiglu)."""
    case = doctor.parity_cases("swiglu")[0]
    row = doctor.compare_case("swiglu", case, "float32", contextlib.nullcontext, 1e-4)
    assert row["status"] == "PASS" and row["max_err"] < 1e-5 and set(row["errors"]) == {"out0", "dgate", "dup"}

    monkeypatch.setitem(dispatch._REGISTRY["swiglu"], "fused", lambda gate, up: paddle.nn.functional.sigmoid(gate) * up)
    row = doctor.compare_case("swiglu", case, "float32", contextlib.nullcontext, 1e-4)
    assert row["status"] == "FAIL" and "over tolerance" in row["error"]


def test_every_fused_op_has_representative_cases():
    for op in doctor.fused_ops():
        cases = doctor.parity_cases(op)
        assert cases, op
        for case in cases:
            assert set(case.grads) <= set(case.arrays) and set(case.cast) <= set(case.arrays)
            assert len(case.douts) == len(case.compare)


def test_contracts_mode_catches_a_kernel_precondition(monkeypatch):
    """Per-row M-RoPE tables handed to the fused rope kernel (audit B1) violate its contract; the fixed op passes."""
    out = doctor.run_check("contracts.rotary", lambda: doctor.check_contract_parity("rotary"))
    assert out.status == "PASS", out.detail

    def rotary_before_b1_fix(q, k, cos, sin):
        c, s = (cos.unsqueeze(2), sin.unsqueeze(2)) if cos.ndim == 3 else (cos[:, :, :1], sin[:, :, :1])
        q_out, k_out, _ = gpu_kernels.kernel("fused_rotary_position_embedding")(
            q, k, None, sin=s.astype(q.dtype), cos=c.astype(q.dtype), use_neox_rotary_style=False)
        return q_out, k_out

    monkeypatch.setitem(dispatch._REGISTRY["rotary"], "fused", rotary_before_b1_fix)
    out = doctor.run_check("contracts.rotary", lambda: doctor.check_contract_parity("rotary"))
    assert out.status == "FAIL" and "contract violated" in out.detail and "must be 1" in out.detail


@pytest.mark.slow
@cpu_machine
def test_contracts_flag_runs_every_fused_op_through_the_doubles(tmp_path):
    path = tmp_path / "r.json"
    cli.main(["doctor", "--contracts", "--report", str(path)])
    doc = _report(path)
    rows = {c["name"]: c for c in doc["checks"] if c["name"].startswith("contracts.")}
    assert set(rows) == {f"contracts.{op}" for op in doctor.fused_ops()}
    for name, c in rows.items():
        assert c["status"] in ("PASS", "SKIP"), (name, c["detail"])
    attention = rows["contracts.attention"]["data"]["cases"]
    # bf16 takes Paddle's flash branch; the reference comparison ran for every case
    assert all(r["kernel_calls"].get("sdpa:flash_attn") == 1 for r in attention if r["dtype"] == "bfloat16")
    assert all("max_err" in r for r in attention)


@pytest.mark.slow
def test_grpo_step_and_worker_on_cpu(tmp_path):
    """The GRPO-step check's logic and the launched worker's result file, on CPU in fp32 (one process)."""
    model = doctor.tiny_checkpoint(str(tmp_path), "qwen2_5_vl")
    args = argparse.Namespace(model=model, work=str(tmp_path / "work"), stage=0, device="cpu", dtype="float32")
    assert doctor.worker_main(args) == 0
    result = _report(tmp_path / "work" / "result.stage0.rank0.json")
    assert result["status"] == "PASS", result
    assert np.isfinite(result["loss"]) and np.isfinite(result["grad_norm"]) and result["grad_norm"] > 0
    assert result["tensors_changed"] == result["tensors_total"] > 0
    assert doctor.weights_changed(model, model, "float32") == (0, result["tensors_total"])
    # an untouched bf16 save of the model compares equal to the fp32 checkpoint rounded to bf16
    from paddlemix_r1.models import from_pretrained

    from_pretrained(model, dtype="bfloat16").save_pretrained(str(tmp_path / "bf16"))
    assert doctor.weights_changed(model, str(tmp_path / "bf16"), "bfloat16") == (0, result["tensors_total"])


def test_a_sharded_stage_refusing_one_rank_is_a_skip(monkeypatch):
    import paddlemix_r1.grpo.trainer as trainer

    def refuse(cfg):
        raise RuntimeError(f"sharding_stage={cfg.sharding_stage} needs more than one rank: Paddle asserts nranks > 1")

    monkeypatch.setattr(trainer, "GRPOTrainer", refuse)
    result = doctor.grpo_step("unused", 1, "unused", device="cpu", dtype="float32")
    assert result["status"] == "SKIP" and "needs more than one rank" in result["detail"]
    with pytest.raises(RuntimeError):
        doctor.grpo_step("unused", 0, "unused", device="cpu", dtype="float32")


def test_decoder_memory_measurement_and_formula():
    from paddlemix_r1.distributed import memory
    from paddlemix_r1.models.config import TextConfig

    cfg = TextConfig(vocab_size=64, hidden_size=128, intermediate_size=256, num_hidden_layers=1, num_attention_heads=4,
                     num_key_value_heads=2, rope_theta=1e6, mrope_section=[4, 6, 6])
    reads = iter([1000, 5000])
    counters = doctor.MemoryCounters(lambda: None, lambda: next(reads), lambda: None, lambda: next(reads))
    got = doctor.measure_decoder_layer(cfg, 32, "float32", counters)
    assert got["measured_bytes"] == 4000 and got["baseline_bytes"] == 1000 and got["weight_bytes"] > 0
    predicted = memory.decoder_layer_peak_bytes(memory.QWEN2_5_VL_3B, doctor.MEMORY_TOKENS, dtype_bytes=2,
                                                recompute=False, flash=True)
    assert predicted > 0


@pytest.mark.skipif(paddle.is_compiled_with_cuda(), reason="checks what a CPU build of Paddle reports")
def test_paddle_build_check(monkeypatch):
    monkeypatch.setattr(doctor, "nvidia_gpus_seen_by_driver", lambda: [])
    monkeypatch.setattr(doctor, "_dist_version", lambda name: "3.3.1" if name == "paddlepaddle" else None)
    assert doctor.check_paddle_build().status == "PASS"
    monkeypatch.setattr(doctor, "_dist_version", lambda name: "3.3.1")
    out = doctor.check_paddle_build()
    assert out.status == "FAIL" and "two Paddle wheels" in out.detail
    monkeypatch.setattr(doctor, "_dist_version", lambda name: "3.3.1" if name == "paddlepaddle" else None)
    monkeypatch.setattr(doctor, "nvidia_gpus_seen_by_driver", lambda: ["NVIDIA A100-SXM4-80GB"])
    out = doctor.check_paddle_build()
    assert out.status == "FAIL" and "CPU build" in out.detail and "paddlepaddle-gpu" in out.detail


def test_gpu_device_check(monkeypatch):
    monkeypatch.setattr(doctor, "gpu_available", lambda: True)
    gpus = [{"index": 0, "name": "NVIDIA A100", "capability": "8.0"}, {"index": 1, "name": "NVIDIA H100", "capability": "9.0"}]
    monkeypatch.setattr(doctor, "_gpus", lambda: gpus)
    assert doctor.check_gpu_devices().status == "PASS"
    monkeypatch.setattr(doctor, "_gpus", lambda: [*gpus, {"index": 2, "name": "Tesla V100", "capability": "7.0"}])
    out = doctor.check_gpu_devices()
    assert out.status == "FAIL" and "Tesla V100 sm70" in out.detail


def test_cpu_info_reads_isa_flags(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\n"
                    "flags\t\t: fpu sse avx avx2 fma\n\nprocessor\t: 1\nflags\t\t: avx512f\n")
    info = doctor.cpu_info(str(path))
    assert info["model"] == "AMD EPYC 7B13" and info["vendor"] == "AuthenticAMD"
    assert info["avx2"] is True and info["avx512"] == [] and info["amx"] == []


@pytest.mark.slow
def test_launched_worker_job_on_two_cpu_ranks(tmp_path):
    """The mechanism of the stage-3 check (paddle.distributed.launch running this module's worker, results
    read back per rank), here as 2 gloo processes at stage 0 in fp32."""
    model = doctor.tiny_checkpoint(str(tmp_path), "qwen2_5_vl")
    out = doctor.grpo_step_launched(model, 0, str(tmp_path / "job"), devices=["--nproc_per_node", "2"], device="cpu",
                                    dtype="float32")
    assert out.status == "PASS", (out.detail, out.data.get("worker_logs_tail"))
    assert sorted(r["rank"] for r in out.data["ranks"]) == [0, 1] and out.data["returncode"] == 0
    assert out.detail.startswith("2 ranks; ")
