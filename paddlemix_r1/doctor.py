"""``paddlemix-r1 doctor``: what this machine is, and whether the package's GPU path works on it.

    paddlemix-r1 doctor [--report doctor_report.json] [--contracts]

Prints the build (Python, Paddle, CUDA), the CPU, the runtime settings the package made, the CPU
kernels and the implementation every op dispatches to, then runs the checks and prints one row each
(PASS / FAIL / SKIP / ERROR). Everything, with tracebacks, also goes to a JSON report: the file to
attach to a bug report. The exit code is 0 iff no check FAILed or ERRORed.

Checks (``checks()`` below, in order):
- ``paddle_build``: Paddle >= 3.3, one Paddle wheel, and a CUDA build wherever an NVIDIA GPU is seen.
- ``cpu_kernels``: the compiled CPU kernels (built here if needed, ~20 s once).
- ``gpu_devices``: every visible GPU is sm80-sm90 (the flash-attention kernels need it).
- ``inv_freq_fp32``: a tiny checkpoint of each family loaded with ``dtype="bfloat16"`` keeps every rotary
  frequency buffer in float32 with the float32 load's values (audit B4). Runs on CPU too.
- ``gpu_parity.<op>``: for every op with a "fused" and an "eager" implementation, forward and backward
  of fused (bf16 and fp32 inputs) against eager in fp32 on the same values, on representative shapes.
- ``contracts.<op>`` (``--contracts`` only): the same on CPU through ``paddlemix_r1.ops.contracts``, the CPU
  doubles of Paddle's GPU kernels, which raise ``ContractError`` where the real kernel would reject
  its inputs.
- ``gpu_grpo_step.stage<s>``: one bf16 GRPO step of a tiny model at sharding stage 0, 1 and 2 in this
  process, and stage 3 (or a stage 1/2 that refuses one rank) on GPUs 0 and 1 through
  ``paddle.distributed.launch`` running this module's worker mode: finite loss and gradient norm, and
  weights that changed.
- ``gpu_memory.decoder_layer``: peak GPU memory of one Qwen2.5-VL-3B-shaped decoder layer's forward and
  backward against ``paddlemix_r1.distributed.memory.decoder_layer_peak_bytes``.

``python -m paddlemix_r1.doctor --worker grpo --stage S --model DIR --work DIR`` is the worker mode that
the launched checks start on each rank; each rank writes ``DIR/result.stage<S>.rank<r>.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import glob
import importlib
import importlib.metadata
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import zlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

import paddlemix_r1
from paddlemix_r1 import atomic
from paddlemix_r1._runtime import MIN_PADDLE
from paddlemix_r1.families import VISION_FAMILIES

STATUSES = ("PASS", "FAIL", "SKIP", "ERROR")
DEFAULT_REPORT = "doctor_report.json"

# Parity tolerances: max |fused - reference| over max |reference|, per output and input gradient. The
# reference is the eager implementation in fp32 on the same (bf16-rounded, for bf16) values.
# bf16: 8 mantissa bits, so one rounding is 2^-9 relative; kernels round intermediates too.
# fp32 on GPU: Paddle lets cuBLAS and the cutlass attention kernels use TF32 tensor cores on sm80+
# (10 mantissa bits); on CPU (--contracts) fp32 stays fp32.
TOLERANCE = {"bfloat16": 2e-2, "float32": 1e-4}
TOLERANCE_GPU_FP32 = 2e-3
# The memory check passes when measured / predicted lies in this band.
MEMORY_RATIO_BAND = (0.5, 1.5)
MEMORY_TOKENS = 4096
# Seconds before a launched worker job is killed (a hung collective waits 30 min otherwise).
LAUNCH_TIMEOUT = 300.0
DOCTOR_REWARD = "doctor_text_hash"


# ----------------------------------------------------------------------------------------------
# results
# ----------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What a check function returns (an exception raised by it becomes an ERROR)."""

    status: str
    detail: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class CheckResult:
    name: str
    status: str
    detail: str
    seconds: float
    data: dict[str, Any] = field(default_factory=dict)
    traceback: str | None = None


def run_check(name: str, fn: Callable[[], Outcome]) -> CheckResult:
    """Run one check; any exception is that check's ERROR, with the traceback kept for the report."""
    t0 = time.perf_counter()
    try:
        out = fn()
        if out.status not in STATUSES:
            raise ValueError(f"check {name} returned status {out.status!r}")
        result = CheckResult(name, out.status, out.detail, 0.0, out.data)
    except Exception as e:  # noqa: BLE001 - a failing check must never take the others down
        result = CheckResult(name, "ERROR", f"{type(e).__name__}: {e}", 0.0, traceback=traceback.format_exc())
    result.seconds = time.perf_counter() - t0
    return result


def exit_code(results: list[CheckResult]) -> int:
    return 1 if any(r.status in ("FAIL", "ERROR") for r in results) else 0


# ----------------------------------------------------------------------------------------------
# environment
# ----------------------------------------------------------------------------------------------


def _dist_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git_revision() -> dict[str, Any] | None:
    """Commit of the package's checkout (editable installs), read-only; None outside a git checkout."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(paddlemix_r1.__file__)))
    if not os.path.isdir(os.path.join(root, ".git")) or shutil.which("git") is None:
        return None
    try:
        head = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0:
        return None
    return {"commit": head.stdout.strip(), "modified_files": len(dirty.stdout.splitlines())}


def cpu_info(cpuinfo_path: str = "/proc/cpuinfo") -> dict[str, Any]:
    """Model, vendor, usable cores and the instruction sets the kernels care about (AVX2, AVX-512, AMX)."""
    fields: dict[str, str] = {}
    try:
        with open(cpuinfo_path, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "vendor_id", "flags") and key not in fields:
                    fields[key] = value.strip()
                if len(fields) == 3:
                    break
    except OSError:
        pass
    flags = set(fields.get("flags", "").split())
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "model": fields.get("model name") or platform.processor() or platform.machine(),
        "vendor": fields.get("vendor_id", "unknown"),
        "cores": cores,
        "avx2": "avx2" in flags,
        "avx512": sorted(f for f in flags if f.startswith("avx512")),
        "amx": sorted(f for f in flags if f.startswith("amx")),
    }


def _malloc_setting() -> str:
    """What ``paddlemix_r1.configure_runtime`` did to malloc in this process, or why it left it alone."""
    if os.environ.get("PADDLEMIX_R1_MALLOC", "1") == "0":
        return "glibc default (PADDLEMIX_R1_MALLOC=0)"
    user = [k for k in ("GLIBC_TUNABLES", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_") if k in os.environ]
    if user:
        return "the user's: " + ", ".join(f"{k}={os.environ[k]}" for k in user)
    set_here = paddlemix_r1.runtime_settings().get("malloc")
    if set_here:
        return f"{set_here} (paddlemix_r1)"
    return "glibc default (configure_runtime not called, not glibc, or mallopt refused)"


def _gpus() -> list[dict[str, Any]]:
    import paddle

    if not paddle.is_compiled_with_cuda():
        return []
    out = []
    for i in range(paddle.device.cuda.device_count()):
        p = paddle.device.cuda.get_device_properties(i)
        out.append({"index": i, "name": p.name, "capability": f"{p.major}.{p.minor}",
                    "memory_gb": round(p.total_memory / 1e9, 1), "multiprocessors": p.multi_processor_count})
    return out


def nvidia_gpus_seen_by_driver() -> list[str]:
    """GPUs the NVIDIA driver reports, whatever Paddle's build (to catch a CPU wheel on a GPU machine)."""
    names = []
    for info in sorted(glob.glob("/proc/driver/nvidia/gpus/*/information")):
        with contextlib.suppress(OSError), open(info, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("Model:"):
                    names.append(line.split(":", 1)[1].strip())
    if not names and shutil.which("nvidia-smi"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            done = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
            names = [ln.strip() for ln in done.stdout.splitlines() if ln.startswith("GPU ")]
    return names


def gpu_available() -> bool:
    import paddle

    return paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0


def no_gpu_reason() -> str:
    import paddle

    if not paddle.is_compiled_with_cuda():
        return "this Paddle is a CPU build (paddle.is_compiled_with_cuda() is False)"
    return f"no GPU visible (CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')})"


def collect_environment() -> dict[str, Any]:
    """Build, CPU, runtime settings, CPU kernels (built here if needed), GPUs and the ops' dispatch."""
    import paddle

    from paddlemix_r1 import ops
    from paddlemix_r1.ops import cpu_ext, dispatch, gemm

    cuda = paddle.is_compiled_with_cuda()
    cpu = cpu_info()
    t0 = time.perf_counter()
    cpu_ext.module()  # builds the CPU kernels on first use (~20 s once); the dispatch below asks for them
    kernels = {"status": cpu_ext.status(), "seconds": round(time.perf_counter() - t0, 2)}
    env: dict[str, Any] = {
        "build": {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "paddle": paddle.__version__,
            "paddle_commit": paddle.version.commit,
            "paddle_wheels": {d: _dist_version(d) for d in ("paddlepaddle", "paddlepaddle-gpu")},
            "compiled_with_cuda": cuda,
            "cuda": paddle.version.cuda() if cuda else None,
            "cudnn": paddle.version.cudnn() if cuda else None,
            "paddlemix_r1": paddlemix_r1.__version__,
            "paddlemix_r1_path": os.path.dirname(os.path.abspath(paddlemix_r1.__file__)),
            "paddlemix_r1_git": _git_revision(),
        },
        "cpu": cpu,
        "runtime": {
            **{k: os.environ.get(k) for k in ("MKL_DEBUG_CPU_TYPE", "MKL_NUM_THREADS", "OMP_NUM_THREADS",
                                              "CUDA_VISIBLE_DEVICES", "PADDLEMIX_R1_CPU_KERNELS")},
            "malloc": _malloc_setting(),
            "openmp_pool": gemm.openmp_threads(),  # what the compiled kernels and oneDNN run on
            "gemm_route": {cls: gemm.library_for(*shape) for cls, shape in gemm.CLASS_EXAMPLES.items()},
            "set_by_paddlemix_r1": paddlemix_r1.runtime_settings(),
            "FLAGS_use_stride_kernel": paddle.get_flags(["FLAGS_use_stride_kernel"])["FLAGS_use_stride_kernel"],
            "paddle_device": paddle.get_device(),
        },
        "cpu_kernels": kernels,
        "gpus": _gpus(),
        "gpus_seen_by_driver": nvidia_gpus_seen_by_driver(),
        "dispatch": {op: {"uses": ops.implementation(op), "implementations": sorted(dispatch.implementations(op))}
                     for op in dispatch.ops()},
        "notes": [],
    }
    if env["runtime"]["MKL_DEBUG_CPU_TYPE"] == "5" and cpu["vendor"] == "GenuineIntel":
        env["notes"].append("MKL_DEBUG_CPU_TYPE=5 is set on an Intel CPU: it forces MKL's AVX2 code path, about half "
                            "the fp32 GEMM speed of its AVX-512 path on these CPUs (the package sets it on AMD only)")
    return env


def format_environment(env: dict[str, Any]) -> str:
    b, c, r = env["build"], env["cpu"], env["runtime"]
    git = b["paddlemix_r1_git"]
    rev = f", git {git['commit'][:12]}{' +%d modified' % git['modified_files'] if git['modified_files'] else ''}" if git else ""
    cuda = f"CUDA {b['cuda']}, cuDNN {b['cudnn']}" if b["compiled_with_cuda"] else "CPU build (no CUDA)"
    isa = (f"AVX2 {'yes' if c['avx2'] else 'no'}, "
           f"AVX-512 {'yes (' + ' '.join(c['avx512']) + ')' if c['avx512'] else 'no'}, "
           f"AMX {'yes (' + ' '.join(c['amx']) + ')' if c['amx'] else 'no'}")
    if env["gpus"]:
        gpus = "; ".join(f"{g['index']}: {g['name']} sm{g['capability'].replace('.', '')} {g['memory_gb']} GB"
                         for g in env["gpus"])
    elif env["gpus_seen_by_driver"]:
        gpus = f"none usable by Paddle; the NVIDIA driver sees {len(env['gpus_seen_by_driver'])}"
    else:
        gpus = "none"
    lines = [
        f"build     Python {b['python']}, Paddle {b['paddle']} (commit {b['paddle_commit'][:12]}), {cuda}, "
        f"paddlemix_r1 {b['paddlemix_r1']}{rev}",
        f"cpu       {c['model']} ({c['vendor']}), {c['cores']} cores usable; {isa}",
        f"runtime   MKL_DEBUG_CPU_TYPE={r['MKL_DEBUG_CPU_TYPE']}, MKL_NUM_THREADS={r['MKL_NUM_THREADS']}, "
        f"OMP_NUM_THREADS={r['OMP_NUM_THREADS']}, OpenMP pool {r['openmp_pool']}, malloc: {r['malloc']}, "
        f"FLAGS_use_stride_kernel={r['FLAGS_use_stride_kernel']}, device {r['paddle_device']}; "
        "set by paddlemix_r1.configure_runtime: "
        + (", ".join(f"{k}={v}" for k, v in r["set_by_paddlemix_r1"].items()) or "nothing"),
        f"kernels   CPU: {env['cpu_kernels']['status']} ({env['cpu_kernels']['seconds']:.1f} s); GEMM by shape class: "
        + ", ".join(f"{cls} -> {lib}" for cls, lib in r["gemm_route"].items()),
        f"gpus      {gpus}",
        "dispatch  " + ", ".join(f"{op}={d['uses']}" for op, d in env["dispatch"].items()),
    ]
    lines += [f"note      {n}" for n in env["notes"]]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# build, kernels, devices
# ----------------------------------------------------------------------------------------------


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def check_paddle_build() -> Outcome:
    import paddle

    problems = []
    version = _version_tuple(paddle.__version__)
    develop = version[:2] == (0, 0)  # source builds of Paddle's develop branch say 0.0.0
    if not develop and version[:2] < MIN_PADDLE:
        problems.append(f"Paddle {paddle.__version__} is older than {'.'.join(map(str, MIN_PADDLE))} "
                        "(the package is written against Paddle 3.3's kernels and APIs)")
    wheels = {d: v for d in ("paddlepaddle", "paddlepaddle-gpu") if (v := _dist_version(d))}
    if len(wheels) > 1:
        problems.append(f"two Paddle wheels are installed ({', '.join(f'{d}=={v}' for d, v in wheels.items())}); "
                        "both write site-packages/paddle: pip uninstall -y paddlepaddle paddlepaddle-gpu, then "
                        "install the one you need (README, GPU section)")
    seen = nvidia_gpus_seen_by_driver()
    cuda = paddle.is_compiled_with_cuda()
    if seen and not cuda:
        problems.append(f"the NVIDIA driver sees {len(seen)} GPU(s) ({seen[0]}) but this Paddle is a CPU build: "
                        "everything would run on the CPU; install paddlepaddle-gpu (README, GPU section)")
    if cuda and paddle.device.cuda.device_count() == 0:
        problems.append(f"CUDA build of Paddle but no GPU is visible ({no_gpu_reason()}); check the driver "
                        "(nvidia-smi) and CUDA_VISIBLE_DEVICES")
    kind = f"CUDA {paddle.version.cuda()} build" if cuda else "CPU build"
    data = {"paddle": paddle.__version__, "wheels": wheels, "gpus_seen_by_driver": seen}
    if problems:
        return Outcome("FAIL", "; ".join(problems), data)
    where = f"{paddle.device.cuda.device_count()} GPU(s) visible" if cuda else "no NVIDIA GPU on this machine"
    return Outcome("PASS", f"Paddle {paddle.__version__}, {kind}, {where}", data)


def check_cpu_kernels() -> Outcome:
    from paddlemix_r1.ops import cpu_ext

    loaded = cpu_ext.module() is not None  # built (or loaded) already by collect_environment
    status = cpu_ext.status()
    data = {"status": status, "kernels": {op: cpu_ext.provides(op) for op in cpu_ext.KERNEL_OF}}
    if loaded:
        missing = [op for op, ok in data["kernels"].items() if not ok]
        extra = f"; eager for {', '.join(missing)}" if missing else ""
        return Outcome("PASS", f"{len(data['kernels']) - len(missing)} kernels: {status}{extra}", data)
    if status.startswith("disabled"):
        return Outcome("SKIP", f"{status}: the ops use the eager references", data)
    if gpu_available():
        return Outcome("SKIP", f"unused on GPU (the GPU dispatch never picks them); {status[:300]}", data)
    return Outcome("FAIL", f"CPU kernels unavailable, CPU training runs the slower eager references: {status[:500]} "
                   "(install a C++ compiler, e.g. apt-get install g++, or set PADDLEMIX_R1_CPU_KERNELS=0 to accept "
                   "eager)", data)


def check_gpu_devices() -> Outcome:
    if not gpu_available():
        return Outcome("SKIP", no_gpu_reason())
    gpus = _gpus()
    bad = [g for g in gpus if not (g["capability"].startswith("8.") or g["capability"] == "9.0")]
    names = ", ".join(f"{g['name']} (sm{g['capability'].replace('.', '')})" for g in gpus)
    if bad:
        return Outcome("FAIL", f"flash attention (vision towers, decoder) needs sm80-sm90 (A100/A800/H100/H800/H200); "
                       f"unsupported: {', '.join(g['name'] + ' sm' + g['capability'].replace('.', '') for g in bad)}",
                       {"gpus": gpus})
    return Outcome("PASS", names, {"gpus": gpus})


# ----------------------------------------------------------------------------------------------
# rotary frequency buffers (audit B4)
# ----------------------------------------------------------------------------------------------


def rotary_buffer_problems(model, reference=None) -> tuple[list[str], list[str]]:
    """Every ``inv_freq`` buffer under ``model.model`` and ``model.visual``: must be float32 and, when a
    float32-loaded ``reference`` is given, hold its values (a buffer cast to bf16 and back is float32
    again but keeps the rounding). Returns (buffer names found, problems)."""
    import paddle

    ref = {name: buf for name, buf in reference.named_buffers()} if reference is not None else {}
    found, problems = [], []
    for part in ("model", "visual"):
        sub = getattr(model, part, None)
        if sub is None:
            problems.append(f"the model has no .{part}")
            continue
        for name, buf in sub.named_buffers():
            if name.rsplit(".", 1)[-1] != "inv_freq":
                continue
            full = f"{part}.{name}"
            found.append(full)
            if buf.dtype != paddle.float32:
                problems.append(f"{full} is {str(buf.dtype).replace('paddle.', '')}, expected float32")
                continue
            if full in ref:
                want = ref[full].astype("float32").numpy()
                got = buf.numpy()
                err = float(np.max(np.abs(got - want) / np.maximum(np.abs(want), 1e-30))) if want.size else 0.0
                if got.shape != want.shape or err > 1e-6:
                    problems.append(f"{full} differs from the float32 load (max relative error {err:.2e})")
    if not found:
        problems.append("no inv_freq buffer under model.model or model.visual (the check is out of date?)")
    return found, problems


def check_inv_freq(workdir: str) -> Outcome:
    import paddle

    from paddlemix_r1.models import from_pretrained

    details, problems, data = [], [], {"device": paddle.get_device()}
    for family in VISION_FAMILIES:
        path = tiny_checkpoint(workdir, family)
        found, probs = rotary_buffer_problems(from_pretrained(path, dtype="bfloat16"),
                                              from_pretrained(path, dtype="float32"))
        data[family] = {"buffers": found, "problems": probs}
        problems += [f"{family}: {p}" for p in probs]
        details.append(f"{family}: {', '.join(found) or 'none'}")
    where = f"on {data['device']}"
    if problems:
        return Outcome("FAIL", f"bf16 load {where}: " + "; ".join(problems) + " (audit B4: wrong M-RoPE / vision "
                       "RoPE phases at long positions)", data)
    return Outcome("PASS", f"bf16 load {where}: float32 with the float32 values ({'; '.join(details)})", data)


def tiny_checkpoint(workdir: str, family: str) -> str:
    """A tiny random checkpoint of ``family`` in ``workdir`` (built once per run)."""
    from paddlemix_r1.models import build_tiny_checkpoint

    path = os.path.join(workdir, f"tiny-{family}")
    if not os.path.exists(os.path.join(path, "config.json")):
        build_tiny_checkpoint(path, family=family, seed=0)
    return path


# ----------------------------------------------------------------------------------------------
# fused vs eager parity
# ----------------------------------------------------------------------------------------------


@dataclass
class ParityCase:
    """One representative call of an op.

    ``arrays``: fp32 values of every tensor argument; those named in ``cast`` are passed in the tested
    dtype (the others, rotary tables and masks, stay fp32 as the op's signature says). ``call(impl, t)``
    calls the implementation with the tensors ``t`` and returns its outputs as a tuple. ``douts``: the
    upstream gradient of each output; ``compare``: a boolean mask per output of the elements compared
    (None: all), e.g. the non-padding query rows of attention (padding rows must only be finite).
    """

    name: str
    arrays: dict[str, np.ndarray]
    cast: tuple[str, ...]
    grads: tuple[str, ...]
    call: Callable[[Callable, dict[str, Any]], tuple]
    douts: tuple[np.ndarray, ...]
    compare: tuple[np.ndarray | None, ...]


def round_to_bf16(a: np.ndarray) -> np.ndarray:
    """fp32 -> nearest bf16 value (ties to even), still as fp32 (finite inputs)."""
    bits = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
    rounded = (bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) & np.uint32(0xFFFF0000)
    return rounded.astype(np.uint32).view(np.float32)


def _left_padded(batch: int, length: int, pads: list[int]) -> np.ndarray:
    """(B, K) attention mask, 1 = token: row b starts with pads[b] padding positions."""
    mask = np.ones((batch, length), dtype=np.int64)
    for b, p in enumerate(pads):
        mask[b, :p] = 0
    return mask


def _attention_case(rng, name: str, lq: int, lk: int, pads: list[int]) -> ParityCase:
    import paddle

    from paddlemix_r1 import ops

    b, nh, nkv, hd = len(pads), 16, 2, 128  # Qwen2.5-VL-3B's decoder: GQA 16 / 2 heads
    am = _left_padded(b, lk, pads)
    mask = ops.causal_padding_mask(paddle.to_tensor(am), lq).numpy()  # (B, 1, Lq, K) fp32
    rows = am[:, lk - lq:].astype(bool)  # (B, Lq): queries that are tokens (padding queries are never read)
    dout = rng.standard_normal((b, lq, nh, hd)).astype(np.float32) * rows[:, :, None, None]
    scale = hd**-0.5
    return ParityCase(
        name=name,
        arrays={"q": rng.standard_normal((b, lq, nh, hd)).astype(np.float32),
                "k": rng.standard_normal((nkv, b, lk, hd)).astype(np.float32),
                "v": rng.standard_normal((nkv, b, lk, hd)).astype(np.float32), "mask": mask},
        cast=("q", "k", "v"), grads=("q", "k", "v"),
        call=lambda fn, t: (fn(t["q"], t["k"], t["v"], t["mask"], scale),),
        douts=(dout,), compare=(np.broadcast_to(rows[:, :, None, None], (b, lq, nh, hd)),))


def _rotary_cases(rng) -> list[ParityCase]:
    import paddle

    from paddlemix_r1 import ops

    cases = []
    # decoder: B = 2 rows with different M-RoPE positions (left padding, an image block), (B, L, hd) tables as
    # Decoder.rope_tables hands them to every layer on a GPU
    b, length, nh, nkv, hd = 2, 203, 16, 2, 128
    pos = np.zeros((3, b, length), dtype=np.int64)
    for row, pad in enumerate((0, 37)):
        pos[:, row] = np.maximum(np.arange(length) - pad, 0)  # text: one position on all 3 axes (0 on padding)
        img = slice(pad + 5, pad + 5 + 64)  # an 8 x 8 grid of image tokens after 5 text tokens
        pos[0, row, img] = 5  # temporal
        pos[1, row, img] = 5 + np.arange(64) // 8  # height
        pos[2, row, img] = 5 + np.arange(64) % 8  # width
    cos, sin = ops.mrope_cos_sin(paddle.to_tensor(pos), ops.inv_freq(hd, 1e6), [16, 24, 24])  # (B, L, hd)
    cases.append(ParityCase(
        name="decoder B=2 L=203 M-RoPE",
        arrays={"q": rng.standard_normal((b, length, nh, hd)).astype(np.float32),
                "k": rng.standard_normal((b, length, nkv, hd)).astype(np.float32),
                "cos": cos.numpy(), "sin": sin.numpy()},
        cast=("q", "k"), grads=("q", "k"), call=lambda fn, t: tuple(fn(t["q"], t["k"], t["cos"], t["sin"])),
        douts=(rng.standard_normal((b, length, nh, hd)).astype(np.float32),
               rng.standard_normal((b, length, nkv, hd)).astype(np.float32)),
        compare=(None, None)))
    # vision-shaped: batch 1, N patches, 16 heads of 80, (1, N, 2 nh, hd) tables as vision_rotary_tables makes
    # them (the GPU vision path rotates in fp32 by the eager op today; this keeps the fused kernel honest too)
    n, vh, vd = 460, 16, 80
    hw = np.stack([np.arange(n) // 20, np.arange(n) % 20], axis=1)
    vcos, vsin = ops.vision_cos_sin(paddle.to_tensor(hw), ops.inv_freq(vd // 2, 10000.0))  # (N, hd)
    vcos = np.broadcast_to(vcos.numpy()[None, :, None, :], (1, n, 2 * vh, vd)).copy()
    vsin = np.broadcast_to(vsin.numpy()[None, :, None, :], (1, n, 2 * vh, vd)).copy()
    cases.append(ParityCase(
        name="vision-shaped N=460 head_dim 80",
        arrays={"q": rng.standard_normal((1, n, vh, vd)).astype(np.float32),
                "k": rng.standard_normal((1, n, vh, vd)).astype(np.float32), "cos": vcos, "sin": vsin},
        cast=("q", "k"), grads=("q", "k"), call=lambda fn, t: tuple(fn(t["q"], t["k"], t["cos"], t["sin"])),
        douts=(rng.standard_normal((1, n, vh, vd)).astype(np.float32),
               rng.standard_normal((1, n, vh, vd)).astype(np.float32)),
        compare=(None, None)))
    return cases


def _varlen_case(rng, name: str, segments: list[int]) -> ParityCase:
    n, nh, hd = sum(segments), 16, 80  # Qwen2-VL / Qwen2.5-VL vision: 16 heads of 80
    cu = np.concatenate([[0], np.cumsum(segments)]).astype(np.int64)
    scale = hd**-0.5
    return ParityCase(
        name=name, arrays={k: rng.standard_normal((n, nh, hd)).astype(np.float32) for k in ("q", "k", "v")},
        cast=("q", "k", "v"), grads=("q", "k", "v"),
        call=lambda fn, t: (fn(t["q"], t["k"], t["v"], cu, scale),),
        douts=(rng.standard_normal((n, nh, hd)).astype(np.float32),), compare=(None,))


def _vision_attention_case(rng) -> ParityCase:
    import paddle

    from paddlemix_r1 import ops

    segments, nh, hd = [64, 64, 136, 196], 16, 80  # windows of 8 x 8 patches and whole images, 16 heads of 80
    n = sum(segments)
    cu = np.concatenate([[0], np.cumsum(segments)]).astype(np.int64)
    hw = np.stack([np.arange(n) // 20, np.arange(n) % 20], axis=1)
    cos, sin = ops.vision_cos_sin(paddle.to_tensor(hw), ops.inv_freq(hd // 2, 10000.0))  # (N, hd) fp32
    cos, sin = (np.broadcast_to(t.numpy()[None, :, None, :], (1, n, 2 * nh, hd)).copy() for t in (cos, sin))
    scale = hd**-0.5
    return ParityCase(
        name="4 segments 64+64+136+196, packed qkv",
        arrays={"qkv": rng.standard_normal((n, 3, nh, hd)).astype(np.float32), "cos": cos, "sin": sin},
        cast=("qkv",), grads=("qkv",), call=lambda fn, t: (fn(t["qkv"], t["cos"], t["sin"], cu, scale),),
        douts=(rng.standard_normal((n, nh, hd)).astype(np.float32),), compare=(None,))


def parity_cases(op: str, on_cpu: bool = False) -> list[ParityCase]:
    """Representative shapes of ``op`` (Qwen2.5-VL-3B-like); empty for an op without any here.

    ``on_cpu`` (the contract doubles): the same shapes, except log-softmax over 8192 columns instead of the
    151,936 of the vocabulary (Paddle's CPU log_softmax takes ~30 s for 16 such rows; a precondition does
    not depend on the width)."""
    rng = np.random.default_rng(zlib.crc32(op.encode()))
    if op == "attention":
        return [_attention_case(rng, "prefill B=2 L=203 (K%8=3) left-padded", 203, 203, [0, 37]),
                _attention_case(rng, "prefill B=2 L=256 (K%8=0) left-padded", 256, 256, [0, 61]),
                _attention_case(rng, "completion Lq=16 over K=216 (K%8=0)", 16, 216, [0, 23])]
    if op == "rotary":
        return _rotary_cases(rng)
    if op == "varlen_attention":
        return [_varlen_case(rng, "4 segments 64+64+136+196", [64, 64, 136, 196]),
                _varlen_case(rng, "1 segment 196", [196])]
    if op == "vision_attention":
        return [_vision_attention_case(rng)]
    if op == "rms_norm":
        return [ParityCase(
            name="(2, 203, 2048)",
            arrays={"x": rng.standard_normal((2, 203, 2048)).astype(np.float32),
                    "weight": (1.0 + 0.1 * rng.standard_normal(2048)).astype(np.float32)},
            cast=("x", "weight"), grads=("x", "weight"), call=lambda fn, t: (fn(t["x"], t["weight"], 1e-6),),
            douts=(rng.standard_normal((2, 203, 2048)).astype(np.float32),), compare=(None,))]
    if op == "swiglu":
        return [ParityCase(
            name="(406, 11008)",
            arrays={"gate": 2 * rng.standard_normal((406, 11008)).astype(np.float32),
                    "up": rng.standard_normal((406, 11008)).astype(np.float32)},
            cast=("gate", "up"), grads=("gate", "up"), call=lambda fn, t: (fn(t["gate"], t["up"]),),
            douts=(rng.standard_normal((406, 11008)).astype(np.float32),), compare=(None,))]
    if op == "log_softmax":
        shape = (16, 8192) if on_cpu else (16, 151936)
        return [ParityCase(
            name=str(shape), arrays={"x": 3 * rng.standard_normal(shape).astype(np.float32)},
            cast=("x",), grads=("x",), call=lambda fn, t: (fn(t["x"], -1),),
            douts=(rng.standard_normal(shape).astype(np.float32) * 1e-2,), compare=(None,))]
    return []


def fused_ops() -> list[str]:
    """Ops with both a "fused" and an "eager" implementation."""
    from paddlemix_r1.ops import dispatch

    return [op for op in dispatch.ops() if {"fused", "eager"} <= set(dispatch.implementations(op))]


def _run_impl(fn: Callable, case: ParityCase, dtype: str, arrays: dict[str, np.ndarray],
              douts: tuple[np.ndarray, ...]) -> tuple[list[np.ndarray], dict[str, np.ndarray | None]]:
    """Forward ``case`` through ``fn`` in ``dtype`` and backward the upstream gradients; fp32 numpy results."""
    import paddle

    t: dict[str, Any] = {}
    for name, arr in arrays.items():
        x = paddle.to_tensor(arr)
        if name in case.cast and dtype != "float32":
            x = x.astype(dtype)
        x.stop_gradient = name not in case.grads
        t[name] = x
    outs = case.call(fn, t)
    paddle.autograd.backward(list(outs), [paddle.to_tensor(g).astype(o.dtype) for g, o in zip(douts, outs)])
    got = [o.astype("float32").numpy() for o in outs]
    grads = {n: None if t[n].grad is None else t[n].grad.astype("float32").numpy() for n in case.grads}
    return got, grads


def _rel_err(got: np.ndarray, ref: np.ndarray, where: np.ndarray | None = None) -> float:
    if where is not None:
        got, ref = got[where], ref[where]
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    diff = float(np.max(np.abs(got.astype(np.float64) - ref))) if ref.size else 0.0
    return diff / scale if scale > 0 else diff


@contextlib.contextmanager
def _exact_fp32_matmul() -> Iterator[None]:
    """cuBLAS without TF32 (Paddle's default allows it on sm80+), so the GPU reference is true fp32."""
    import paddle

    core = paddle.base.core
    if not (paddle.is_compiled_with_cuda() and hasattr(core, "set_cublas_switch")):
        yield
        return
    before = core.get_cublas_switch()
    core.set_cublas_switch(False)
    try:
        yield
    finally:
        core.set_cublas_switch(before)


def compare_case(op: str, case: ParityCase, dtype: str, fused_context: Callable[[], contextlib.AbstractContextManager],
                 tol: float, contract_error: type[BaseException] | None = None) -> dict[str, Any]:
    """Fused ``op`` in ``dtype`` (inside ``fused_context()``) against eager fp32 on the same values.

    With ``contract_error`` (the CPU contract doubles), ``fused_context()`` yields a log of the doubles called:
    a fused run that called none only exercised Paddle's CPU kernels, and a missing CPU kernel (Paddle's CPU
    build has no bf16 log_softmax or concat_grad, say) is a limit of the simulation; both are SKIPs.
    """
    from paddlemix_r1.ops import dispatch

    impls = dispatch.implementations(op)
    arrays = {k: round_to_bf16(v) if dtype == "bfloat16" and k in case.cast else v for k, v in case.arrays.items()}
    douts = tuple(round_to_bf16(d) if dtype == "bfloat16" else d for d in case.douts)
    row: dict[str, Any] = {"case": case.name, "dtype": dtype, "tol": tol}
    simulated = contract_error is not None
    log = None
    try:
        with fused_context() as entered:
            log = entered
            got, got_grads = _run_impl(impls["fused"], case, dtype, arrays, douts)
    except Exception as e:  # noqa: BLE001 - the fused kernel rejecting representative inputs is the finding
        message = f"{type(e).__name__}: {str(e)[:600]}"
        row.update(kernel_calls=_calls(log), traceback=traceback.format_exc())
        if simulated and isinstance(e, contract_error):
            row.update(status="FAIL", error=f"contract violated: {message}")
        elif simulated and "is not registered" in str(e) and "CPU" in str(e):
            first = str(e).strip().splitlines()[0][:300]
            row.update(status="SKIP", error=f"Paddle's CPU build lacks a kernel on this path ({first}); a GPU build has it")
        else:
            row.update(status="FAIL", error=f"fused raised {message}")
        return row
    row["kernel_calls"] = _calls(log)
    if simulated and not row["kernel_calls"]:
        row.update(status="SKIP", error="the fused implementation called no contract double (only Paddle's own kernels, "
                                        "whose GPU versions cannot be simulated here)")
        return row
    all_eager = {name: "eager" for name in dispatch.ops() if "eager" in dispatch.implementations(name)}
    with dispatch.override(**all_eager), _exact_fp32_matmul():
        ref, ref_grads = _run_impl(impls["eager"], case, "float32", arrays, douts)
    errors: dict[str, float] = {}
    problems = []
    for i, (g, r) in enumerate(zip(got, ref)):
        if not np.isfinite(g).all():
            problems.append(f"output {i} not finite")
        errors[f"out{i}"] = _rel_err(g, r, case.compare[i])
    for n in case.grads:
        g, r = got_grads[n], ref_grads[n]
        if g is None or r is None:
            problems.append(f"no gradient for {n} ({'fused' if g is None else 'eager'})")
            continue
        if not np.isfinite(g).all():
            problems.append(f"d{n} not finite")
        errors[f"d{n}"] = _rel_err(g, r)
    worst = max(errors, key=errors.get) if errors else None
    row.update(errors=errors, max_err=errors[worst] if worst else float("nan"), worst=worst)
    over = [f"{k} {v:.1e}" for k, v in errors.items() if not v <= tol]
    if over:
        problems.append(f"over tolerance {tol:.0e}: {', '.join(over)}")
    row["status"] = "FAIL" if problems else "PASS"
    if problems:
        row["error"] = "; ".join(problems)
    return row


def _calls(log: Any) -> dict[str, int] | None:
    """The contract doubles' call counts (None outside ``--contracts``)."""
    calls = getattr(log, "calls", None)
    return None if calls is None else dict(calls)


def _summarize_parity(op: str, rows: list[dict[str, Any]]) -> Outcome:
    if not rows:
        return Outcome("ERROR", f"no representative case for op {op!r}: add one to doctor.parity_cases")
    parts = []
    for dtype, short in (("bfloat16", "bf16"), ("float32", "fp32")):
        mine = [r for r in rows if r["dtype"] == dtype and "max_err" in r]
        if mine:
            parts.append(f"{short} max {max(r['max_err'] for r in mine):.1e} (tol {mine[0]['tol']:.0e})")
    errors = ", ".join(parts)
    failed = [r for r in rows if r["status"] == "FAIL"]
    skipped = [r for r in rows if r["status"] == "SKIP"]
    if failed:
        first = failed[0]
        return Outcome("FAIL", f"{len(failed)}/{len(rows)} runs fail; {first['case']} {first['dtype']}: "
                       f"{first.get('error', '')}" + (f" [{errors}]" if errors else ""), {"cases": rows})
    if len(skipped) == len(rows):
        return Outcome("SKIP", skipped[0]["error"], {"cases": rows})
    skip = f"; {len(skipped)} skipped ({skipped[0]['dtype']}: {skipped[0]['error']})" if skipped else ""
    return Outcome("PASS", f"{errors}; {len(rows) - len(skipped)} runs{skip}", {"cases": rows})


def check_gpu_parity(op: str) -> Outcome:
    if not gpu_available():
        return Outcome("SKIP", no_gpu_reason())
    tol = {"bfloat16": TOLERANCE["bfloat16"], "float32": TOLERANCE_GPU_FP32}
    rows = [compare_case(op, case, dtype, contextlib.nullcontext, tol[dtype])
            for case in parity_cases(op) for dtype in ("bfloat16", "float32")]
    return _summarize_parity(op, rows)


def check_contract_parity(op: str) -> Outcome:
    """``check_gpu_parity`` on CPU, the fused side through the CPU contract doubles of Paddle's GPU kernels."""
    from paddlemix_r1.distributed.sharding import device_scope
    from paddlemix_r1.ops import contracts

    with device_scope("cpu"):
        rows = [compare_case(op, case, dtype, contracts.gpu_contracts, TOLERANCE[dtype], contracts.ContractError)
                for case in parity_cases(op, on_cpu=True) for dtype in ("bfloat16", "float32")]
    return _summarize_parity(op, rows)


# ----------------------------------------------------------------------------------------------
# one GRPO step
# ----------------------------------------------------------------------------------------------


def text_hash_reward(completions: list[str], **_: Any) -> list[float]:
    """A reward that differs between any two different completions, so group advantages are not zero
    and the step has a gradient (a random tiny model scores 0 on every task reward)."""
    return [zlib.crc32(text.encode()) / 2**32 for text in completions]


def _register_doctor_reward() -> None:
    from paddlemix_r1.rewards import list_rewards, register_reward

    if DOCTOR_REWARD not in list_rewards():
        register_reward(DOCTOR_REWARD, text_hash_reward)


def grpo_config(model_dir: str, stage: int, output_dir: str, device: str = "gpu", dtype: str = "bfloat16"):
    from paddlemix_r1.grpo.config import GRPOConfig

    # lr 1e-3: one Adam step moves weights of magnitude ~0.02 by ~1e-3, several bf16 ulps, so a step that
    # ran is visible in the saved bf16 weights
    return GRPOConfig(model_name_or_path=model_dir, dtype=dtype, device=device, max_steps=1, prompts_per_step=2,
                      num_generations=2, max_completion_length=8, visualdl=False, progress_bar=False,
                      output_dir=output_dir, sharding_stage=stage, reward_funcs=[DOCTOR_REWARD], learning_rate=1e-3,
                      num_train_samples=8, log_completions_steps=0, save_total_limit=1, seed=0)


def _safetensors(path: str) -> dict[str, np.ndarray]:
    import paddle
    from safetensors import safe_open

    from paddlemix_r1._runtime import stride_kernels

    out = {}
    for file in sorted(glob.glob(os.path.join(path, "*.safetensors"))):
        with stride_kernels(), safe_open(file, framework="paddle") as f:
            for key in f.keys():
                out[key] = f.get_tensor(key).astype(paddle.float32).numpy()
    return out


def weights_changed(before_dir: str, after_dir: str, dtype: str) -> tuple[int, int]:
    """(tensors that differ, tensors compared) between two HF checkpoints; ``before`` is rounded to
    ``dtype`` first, so an untouched weight compares equal."""
    before, after = _safetensors(before_dir), _safetensors(after_dir)
    changed = 0
    common = sorted(set(before) & set(after))
    for key in common:
        b = round_to_bf16(before[key]) if dtype == "bfloat16" else before[key]
        if b.shape != after[key].shape or not np.array_equal(b, after[key]):
            changed += 1
    return changed, len(common)


def _local_grad_norm(params) -> float | None:
    """Norm of the gradients this rank holds, one parameter at a time: ``p.grad``, or under stage 3 the
    rank's slice (``bw_storage`` of Paddle's GroupShardedStage3). None if no gradient is visible."""
    total, seen = 0.0, 0
    for p in params:
        for g in (p.grad, getattr(p, "bw_storage", None)):
            if g is None or (hasattr(g, "_is_initialized") and not g._is_initialized()):
                continue
            gf = g.astype("float32")
            total += float((gf * gf).sum())
            seen += 1
            break
    return math.sqrt(total) if seen else None


def grpo_step(model_dir: str, stage: int, output_dir: str, device: str = "gpu", dtype: str = "bfloat16") -> dict:
    """One GRPO step; returns {"status", "detail", ...}. A single rank refused by a sharded stage is a SKIP."""
    from paddlemix_r1.distributed import get_env
    from paddlemix_r1.grpo.trainer import GRPOTrainer

    _register_doctor_reward()
    cfg = grpo_config(model_dir, stage, output_dir, device, dtype)
    t0 = time.perf_counter()
    try:
        trainer = GRPOTrainer(cfg)
    except RuntimeError as e:
        if stage and get_env().world_size == 1 and "one rank" in str(e):
            return {"status": "SKIP", "detail": f"the trainer refuses one rank: {e}"}
        raise
    norms: list[float | None] = []
    step = trainer.optimizer.step

    def step_recording_grad_norm(*args, **kwargs):
        norms.append(_local_grad_norm(trainer.params))
        return step(*args, **kwargs)

    trainer.optimizer.step = step_recording_grad_norm
    last = trainer.train()[-1]
    env = get_env()
    loss = float(last.get("loss", float("nan")))
    grad_norm, kind = float(last.get("grad_norm", float("nan"))), "global"
    if not math.isfinite(grad_norm) and stage and norms:  # the trainer logs none under sharding
        grad_norm, kind = norms[-1], f"rank {env.rank}'s shard"
    result = {"rank": env.rank, "world_size": env.world_size, "stage": stage, "loss": loss, "grad_norm": grad_norm,
              "grad_norm_kind": kind, "skipped": float(last.get("skipped", float("nan"))),
              "seconds": time.perf_counter() - t0}
    problems = []
    if not math.isfinite(loss):
        problems.append(f"loss {loss}")
    if grad_norm is None:
        kind = "not visible to the doctor under this sharding stage"
    elif not math.isfinite(grad_norm):
        problems.append(f"grad norm {grad_norm}")
    if result["skipped"] != 0.0:
        problems.append("the trainer skipped the step (non-finite loss or gradient)")
    if env.is_main:
        changed, total = weights_changed(model_dir, os.path.join(output_dir, f"checkpoint-{trainer.step}", "model"),
                                         dtype)
        result.update(tensors_changed=changed, tensors_total=total)
        if total == 0 or changed < total / 2:
            problems.append(f"only {changed} of {total} weight tensors changed after the step")
    changed_text = f", {result['tensors_changed']}/{result['tensors_total']} tensors changed" if env.is_main else ""
    norm_text = "n/a" if grad_norm is None else f"{grad_norm:.4g}"
    result["grad_norm_kind"] = kind
    summary = f"loss {loss:.4g}, grad norm {norm_text} ({kind}){changed_text}"
    result["status"] = "FAIL" if problems else "PASS"
    result["detail"] = ("; ".join(problems) + f" [{summary}]") if problems else summary
    return result


def _launch_worker(model_dir: str, stage: int, work: str, devices: list[str], device: str, dtype: str
                   ) -> subprocess.CompletedProcess | None:
    """Start the worker under paddle.distributed.launch (``devices``: ``["--gpus", "0,1"]``); None if it had
    to be killed after ``LAUNCH_TIMEOUT``."""
    # the launcher runs a training_script not ending in .py as a command: here the interpreter with -m
    cmd = [sys.executable, "-m", "paddle.distributed.launch", *devices, "--log_dir",
           os.path.join(work, f"log_stage{stage}"),
           sys.executable, "-m", "paddlemix_r1.doctor", "--worker", "grpo", "--stage", str(stage),
           "--model", model_dir, "--work", work, "--device", device, "--dtype", dtype]
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(paddlemix_r1.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    os.makedirs(work, exist_ok=True)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=LAUNCH_TIMEOUT)
    except subprocess.TimeoutExpired:
        for sig in (signal.SIGTERM, signal.SIGKILL):  # the launcher and its workers: this process group only
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=15)
                break
        return None
    return subprocess.CompletedProcess(cmd, proc.returncode, out, None)


def grpo_step_launched(model_dir: str, stage: int, work: str, devices: list[str] | None = None,
                       device: str = "gpu", dtype: str = "bfloat16") -> Outcome:
    """One GRPO step as a launched job (default: GPUs 0 and 1); the ranks' JSON results are combined."""
    devices = devices or ["--gpus", "0,1"]
    done = _launch_worker(model_dir, stage, work, devices, device, dtype)
    results = []
    for path in sorted(glob.glob(os.path.join(work, f"result.stage{stage}.rank*.json"))):
        with open(path, encoding="utf-8") as f:
            results.append(json.load(f))
    logs = ""
    for log in sorted(glob.glob(os.path.join(work, f"log_stage{stage}", "workerlog.*"))):
        with open(log, encoding="utf-8", errors="replace") as f:
            logs += f"--- {os.path.basename(log)} ---\n" + "".join(f.readlines()[-40:])
    data = {"command_devices": devices, "ranks": results, "returncode": None if done is None else done.returncode,
            "worker_logs_tail": logs}
    if done is None:
        return Outcome("FAIL", f"the launched job ({' '.join(devices)}) did not finish in {LAUNCH_TIMEOUT:.0f} s and "
                       "was killed (a hung collective? see worker_logs_tail in the report)", data)
    if not results:
        tail = (done.stdout or "")[-1500:]
        return Outcome("ERROR", f"the launched job wrote no result (exit code {done.returncode}); launcher output: "
                       f"{tail}", data)
    bad = [r for r in results if r["status"] != "PASS"]
    main = next((r for r in results if r.get("rank") == 0), results[0])
    if bad:
        worst = "ERROR" if any(r["status"] == "ERROR" for r in bad) else bad[0]["status"]
        return Outcome(worst, "; ".join(f"rank {r.get('rank')}: {r['detail']}" for r in bad), data)
    if done.returncode != 0:
        return Outcome("ERROR", f"every rank passed but the job exited with {done.returncode}", data)
    return Outcome("PASS", f"{len(results)} ranks; {main['detail']}", data)


def check_grpo_step(stage: int, workdir: str) -> Outcome:
    import paddle

    if not gpu_available():
        return Outcome("SKIP", no_gpu_reason())
    model = tiny_checkpoint(workdir, "qwen2_5_vl")
    n_gpus = paddle.device.cuda.device_count()
    if stage == 3:
        if n_gpus < 2:
            return Outcome("SKIP", f"stage 3 runs on 2 GPUs; {n_gpus} visible")
        return grpo_step_launched(model, 3, os.path.join(workdir, "grpo_stage3"))
    result = grpo_step(model, stage, os.path.join(workdir, f"grpo_stage{stage}"))
    paddle.device.cuda.empty_cache()
    if result["status"] == "SKIP" and n_gpus >= 2:
        return grpo_step_launched(model, stage, os.path.join(workdir, f"grpo_stage{stage}_2gpu"))
    return Outcome(result["status"], result["detail"], {k: v for k, v in result.items() if k not in ("status", "detail")})


def worker_main(args: argparse.Namespace) -> int:
    """One rank of a launched GRPO step: write its result (or its error) as JSON."""
    rank = int(os.environ.get("PADDLE_TRAINER_ID", "0"))
    os.makedirs(args.work, exist_ok=True)
    path = os.path.join(args.work, f"result.stage{args.stage}.rank{rank}.json")
    try:
        result = grpo_step(args.model, args.stage, os.path.join(args.work, f"out_stage{args.stage}"), args.device,
                           args.dtype)
        code = 0
    except Exception as e:  # noqa: BLE001 - reported to the parent through the result file
        result = {"rank": rank, "status": "ERROR", "detail": f"{type(e).__name__}: {e}",
                  "traceback": traceback.format_exc()}
        code = 1
    atomic.write_json(path, result, default=str)
    return code


# ----------------------------------------------------------------------------------------------
# GPU memory of one decoder layer
# ----------------------------------------------------------------------------------------------


@dataclass
class MemoryCounters:
    """The allocator counters a measurement reads (``paddle.device.cuda``'s on a GPU; fakes in CPU tests)."""

    synchronize: Callable[[], Any]
    allocated: Callable[[], int]
    reset_peak: Callable[[], Any]
    peak: Callable[[], int]

    @classmethod
    def cuda(cls) -> MemoryCounters:
        import paddle

        c = paddle.device.cuda
        return cls(c.synchronize, c.memory_allocated, c.reset_max_memory_allocated, c.max_memory_allocated)


def measure_decoder_layer(cfg, tokens: int, dtype: str, counters: MemoryCounters) -> dict[str, int]:
    """Peak bytes of one ``DecoderLayer(cfg)`` forward + backward over ``tokens`` tokens (one sequence), above
    what is allocated just before the forward, measured as ``memory.decoder_layer_peak_bytes`` defines it: a
    warm-up step first gives every parameter its ``.grad`` (so weights and their gradients are in the
    baseline), then a fresh input, the forward, ``dy = ones_like(y)`` and the backward."""
    import paddle

    from paddlemix_r1 import ops
    from paddlemix_r1.models.decoder import DecoderLayer

    layer = DecoderLayer(cfg)
    if dtype != "float32":
        layer.to(dtype=dtype)
    layer.train()
    pos = paddle.arange(tokens).reshape([1, 1, tokens]).expand([3, 1, tokens])
    cos, sin = ops.mrope_cos_sin(pos, ops.inv_freq(cfg.head_dim, cfg.rope_theta), cfg.mrope_section)  # (1, L, hd)
    if ops.device_kind() == "cpu":  # as Decoder.rope_tables: expanded over heads on CPU only
        cos, sin = ops.expand_tables(cos, sin, cfg.num_attention_heads + cfg.num_key_value_heads)
    mask = ops.causal_padding_mask(paddle.ones([1, tokens], "int64"), tokens)  # (1, 1, L, L) fp32

    def step() -> None:
        x = paddle.randn([1, tokens, cfg.hidden_size]).astype(dtype)
        x.stop_gradient = False
        y = layer(x, cos, sin, mask, None, 0)[0]  # (1, L, H); the layer also returns its keys/values
        y.backward(paddle.ones_like(y))

    step()  # warm-up: parameter gradients allocated
    counters.synchronize()
    base = int(counters.allocated())
    counters.reset_peak()
    step()
    counters.synchronize()
    peak = int(counters.peak()) - base
    weights = sum(int(p.numel()) * p.element_size() for p in layer.parameters())
    return {"tokens": tokens, "measured_bytes": peak, "baseline_bytes": base, "weight_bytes": weights}


def check_decoder_memory() -> Outcome:
    if not gpu_available():
        return Outcome("SKIP", no_gpu_reason())
    import paddle

    from paddlemix_r1 import ops
    from paddlemix_r1.distributed import memory
    from paddlemix_r1.models.config import TextConfig

    arch = memory.QWEN2_5_VL_3B
    cfg = TextConfig(vocab_size=arch.vocab_size, hidden_size=arch.hidden_size,
                     intermediate_size=arch.intermediate_size, num_hidden_layers=1, num_attention_heads=arch.num_heads,
                     num_key_value_heads=arch.num_kv_heads, rope_theta=1e6, mrope_section=[16, 24, 24])
    data: dict[str, Any] = measure_decoder_layer(cfg, MEMORY_TOKENS, "bfloat16", MemoryCounters.cuda())
    data["dispatch"] = {op: ops.implementation(op) for op in ("attention", "rotary", "rms_norm", "swiglu", "linear")}
    paddle.device.cuda.empty_cache()
    measured = data["measured_bytes"]
    predicted = memory.decoder_layer_peak_bytes(arch, MEMORY_TOKENS, dtype_bytes=2, recompute=False, flash=True)
    ratio = measured / predicted if predicted else float("inf")
    data.update(predicted_bytes=int(predicted), ratio=ratio, band=list(MEMORY_RATIO_BAND))
    text = (f"measured {measured / 2**30:.2f} GiB vs formula {predicted / 2**30:.2f} GiB for {MEMORY_TOKENS} tokens "
            f"(Qwen2.5-VL-3B layer, bf16): ratio {ratio:.2f}, band {MEMORY_RATIO_BAND[0]}-{MEMORY_RATIO_BAND[1]}")
    ok = MEMORY_RATIO_BAND[0] <= ratio <= MEMORY_RATIO_BAND[1]
    return Outcome("PASS" if ok else "FAIL", text, data)


# ----------------------------------------------------------------------------------------------
# the command
# ----------------------------------------------------------------------------------------------


def checks(workdir: str, contracts: bool) -> list[tuple[str, Callable[[], Outcome]]]:
    """(name, function) of every check of this run, in order."""
    out: list[tuple[str, Callable[[], Outcome]]] = [
        ("paddle_build", check_paddle_build),
        ("cpu_kernels", check_cpu_kernels),
        ("gpu_devices", check_gpu_devices),
        ("inv_freq_fp32", lambda: check_inv_freq(workdir)),
    ]
    ops_ = fused_ops()
    if contracts:
        out += [(f"contracts.{op}", lambda op=op: check_contract_parity(op)) for op in ops_]
    out += [(f"gpu_parity.{op}", lambda op=op: check_gpu_parity(op)) for op in ops_]
    out += [(f"gpu_grpo_step.stage{s}", lambda s=s: check_grpo_step(s, workdir)) for s in (0, 1, 2, 3)]
    out.append(("gpu_memory.decoder_layer", check_decoder_memory))
    return out


TABLE_DETAIL = 110


def format_row(r: CheckResult) -> str:
    detail = r.detail if len(r.detail) <= TABLE_DETAIL else r.detail[:TABLE_DETAIL - 3] + "..."
    return f"{r.name:<32} {r.status:<6} {r.seconds:>7.1f}  {detail}"


def _write_report(path: str, doc: dict[str, Any]) -> None:
    """Atomically, so a crash (a native kernel can take the process down) leaves the last complete version."""
    atomic.write_json(path, doc, default=str)


def run(report: str = DEFAULT_REPORT, contracts: bool = False, out=None) -> int:
    """The doctor: environment, checks (one table row each as it finishes), JSON report; the exit code.

    The report is rewritten after every check (``"complete": false`` until the end)."""
    out = out or sys.stdout
    path = os.path.abspath(report)
    started = datetime.datetime.now(datetime.timezone.utc)
    print("paddlemix-r1 doctor", file=out)
    try:
        env = collect_environment()
        print(format_environment(env), file=out)
    except Exception as e:  # noqa: BLE001 - still run the checks and write the report
        env = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
        print(f"environment could not be collected: {env['error']}", file=out)
    print(f"\n{'check':<32} {'status':<6} {'seconds':>7}  detail", file=out)
    doc: dict[str, Any] = {"tool": "paddlemix-r1 doctor", "report_version": 1, "argv": sys.argv,
                           "started": started.isoformat(), "options": {"contracts": contracts}, "environment": env,
                           "checks": [], "complete": False}
    results: list[CheckResult] = []
    with tempfile.TemporaryDirectory(prefix="paddlemix_r1_doctor_") as workdir:
        for name, fn in checks(workdir, contracts):
            results.append(run_check(name, fn))
            print(format_row(results[-1]), file=out, flush=True)
            doc["checks"].append(asdict(results[-1]))
            _write_report(path, doc)
    code = exit_code(results)
    counts = {s: sum(r.status == s for r in results) for s in STATUSES}
    problems = [r for r in results if r.status in ("FAIL", "ERROR")]
    if problems:
        print("\nproblems:", file=out)
        for r in problems:
            print(f"- {r.name} {r.status}: {r.detail}", file=out)
    doc.update(seconds=(datetime.datetime.now(datetime.timezone.utc) - started).total_seconds(), summary=counts,
               exit_code=code, complete=True)
    _write_report(path, doc)
    print(f"\n{', '.join(f'{n} {s}' for s, n in counts.items())}; report: {path} (attach it to bug reports)", file=out)
    return code


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--report", default=DEFAULT_REPORT, help=f"JSON report path (default: ./{DEFAULT_REPORT})")
    p.add_argument("--contracts", action="store_true",
                   help="also run the fused-vs-eager parity on CPU through the contract doubles of Paddle's GPU kernels")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m paddlemix_r1.doctor", description=__doc__.split("\n\n")[0])
    add_arguments(p)
    p.add_argument("--worker", choices=["grpo"], help=argparse.SUPPRESS)
    p.add_argument("--stage", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--work", help=argparse.SUPPRESS)
    p.add_argument("--device", default="gpu", help=argparse.SUPPRESS)
    p.add_argument("--dtype", default="bfloat16", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    paddlemix_r1.configure_runtime()  # the CLI's settings: this is also the launched worker's entry point
    if args.worker:
        if not (args.model and args.work):
            p.error("--worker needs --model and --work")
        return worker_main(args)
    return run(report=args.report, contracts=args.contracts)


if __name__ == "__main__":
    raise SystemExit(main())
