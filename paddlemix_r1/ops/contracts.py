"""CPU contract doubles of the Paddle GPU kernels the fused implementations call.

No machine of ours can run Paddle on a GPU, so the GPU path is made checkable on CPU: each double below
takes the place of one Paddle 3.3 GPU kernel (through ``gpu_kernels.substituted``), enforces the
preconditions that kernel checks (each cited from Paddle's source), and computes the result with plain
fp32 Paddle ops (differentiable, so whole training steps run through it). A violated precondition raises
``ContractError``: code that would crash or mis-train on a GPU fails a CPU test.

    with contracts.gpu_contracts() as log:   # dispatch as on an sm80 GPU, doubles in place of the kernels
        ...                                  # model forward / backward / generate / a GRPO step
    log.calls["sdpa:flash_attn"]             # how often each kernel (and sdpa branch) was called

What the doubles cannot show: kernel numerics (the GPU kernels' rounding) and speed — ``paddlemix-r1
doctor`` measures those on a real GPU.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import paddle

from paddlemix_r1.ops import dispatch, gpu_kernels

HALF = (paddle.float16, paddle.bfloat16)


class ContractError(RuntimeError):
    """A call that Paddle's GPU kernel would refuse, or that would compute something wrong on a GPU."""


@dataclass
class ContractLog:
    """What the doubles saw inside one ``gpu_contracts`` block."""

    capability: tuple[int, int]
    calls: Counter = field(default_factory=Counter)


def _require(ok: bool, kernel: str, message: str) -> None:
    if not ok:
        raise ContractError(f"{kernel}: {message}")


def _name(dtype) -> str:
    return str(dtype).replace("paddle.", "")


def _needs_backward(*tensors: paddle.Tensor | None) -> bool:
    return paddle.is_grad_enabled() and any(t is not None and not t.stop_gradient for t in tensors)


def _fp32(t: paddle.Tensor) -> paddle.Tensor:
    return t if t.dtype == paddle.float32 else t.astype("float32")


def _attend_fp32(q, k, v, mask, scale: float) -> paddle.Tensor:
    """Reference attention in fp32. q (B, Lq, H, D), k/v (B, Lk, Hkv, D) (GQA), additive mask broadcastable to
    (B, H, Lq, Lk) or None. Returns (B, Lq, H, D) fp32."""
    h, hkv = q.shape[2], k.shape[2]
    qf, kf, vf = (_fp32(t).transpose([0, 2, 1, 3]) for t in (q, k, v))  # (B, H, L, D)
    if h != hkv:
        kf, vf = (paddle.repeat_interleave(t, h // hkv, axis=1) for t in (kf, vf))
    scores = paddle.matmul(qf * scale, kf, transpose_y=True)  # (B, H, Lq, Lk)
    if mask is not None:
        scores = scores + _fp32(mask)
    probs = paddle.nn.functional.softmax(scores, axis=-1)
    return paddle.matmul(probs, vf).transpose([0, 2, 1, 3])  # (B, Lq, H, D)


class Doubles:
    """The stand-ins, bound to one log and one simulated compute capability."""

    def __init__(self, log: ContractLog):
        self.log = log

    def table(self) -> dict:
        return {"fused_rotary_position_embedding": self.fused_rotary_position_embedding,
                "scaled_dot_product_attention": self.scaled_dot_product_attention,
                "flash_attn_unpadded": self.flash_attn_unpadded,
                "fused_rms_norm": self.fused_rms_norm,
                "swiglu": self.swiglu,
                "get_device_capability": lambda device=None: self.log.capability}

    # ----- paddle.incubate.nn.functional.fused_rotary_position_embedding -----
    def fused_rotary_position_embedding(self, q, k=None, v=None, sin=None, cos=None, position_ids=None,
                                        use_neox_rotary_style=True, time_major=False, rotary_emb_base=10000.0):
        """Checks of paddle/phi/kernels/fusion/gpu/fused_rope_kernel.cu and fused_rope_utils.h (Paddle 3.3): no CPU
        kernel at all; GPU float/double/fp16/bf16; sin/cos in q's dtype, [seq, hd] or [1, seq, 1, hd] covering q's
        seq_len exactly (no position_ids); k/v may have fewer heads (GQA)."""
        name = "fused_rotary_position_embedding"
        self.log.calls[name] += 1
        _require(q.ndim == 4, name, f"q must be 4-D [batch, seq, heads, head_dim], got {q.shape}")
        _require(q.dtype in (*HALF, paddle.float32, paddle.float64), name, f"no GPU kernel for {_name(q.dtype)}")
        _require(q.shape[-1] % 2 == 0, name, f"head_dim must be even, got {q.shape[-1]}")
        seq = q.shape[0] if time_major else q.shape[1]
        for label, t in (("k", k), ("v", v)):
            if t is not None:
                _require(t.dtype == q.dtype, name, f"{label} dtype {_name(t.dtype)} != q dtype {_name(q.dtype)}")
                _require(t.ndim == 4 and t.shape[:2] == q.shape[:2] and t.shape[3] == q.shape[3], name,
                         f"{label} shape {t.shape} does not match q {q.shape} outside the heads axis")
        _require((sin is None) == (cos is None), name, "sin and cos must be given together")
        if sin is None:
            raise NotImplementedError("this double models sin/cos tables only (the code passes them)")
        _require(not use_neox_rotary_style, name + " double", "models use_neox_rotary_style=False (rotate-half) only")
        for label, t in (("sin", sin), ("cos", cos)):
            _require(t.dtype == q.dtype, name, f"{label} dtype {_name(t.dtype)} must be q's {_name(q.dtype)}")
            if t.ndim == 4:
                # fused_rope_utils.h: "The batch_size and num_heads of sin and cos must be 1."
                _require(t.shape[0] == 1 and t.shape[2] == 1, name,
                         f"The batch_size and num_heads of {label} must be 1 ([1, seq_len, 1, head_dim]), got {t.shape}")
                rows = t.shape[1]
            else:
                _require(t.ndim == 2, name, f"{label} must be [seq_len, head_dim] or [1, seq_len, 1, head_dim], got {t.shape}")
                rows = t.shape[0]
            _require(rows == seq and t.shape[-1] == q.shape[-1], name,
                     f"{label} {t.shape} must cover seq_len {seq} and head_dim {q.shape[-1]}")
        c = _fp32(cos).reshape([1, seq, 1, q.shape[-1]])  # (1, seq, 1, hd)
        s = _fp32(sin).reshape([1, seq, 1, q.shape[-1]])
        if time_major:
            c, s = c.transpose([1, 0, 2, 3]), s.transpose([1, 0, 2, 3])

        def rotate(x):
            if x is None:
                return None
            xf = _fp32(x)
            x1, x2 = paddle.split(xf, 2, axis=-1)
            out = xf * c + paddle.concat([-x2, x1], axis=-1) * s
            return out.astype(x.dtype)

        return rotate(q), rotate(k), rotate(v)

    # ----- paddle.nn.functional.scaled_dot_product_attention (python/paddle/nn/functional/sdpa.py, 3.3) -----
    def _sdpa_branch(self, q, k, v, mask, is_causal: bool, scale) -> str:
        """``select_sdp_for_sdpa`` with the default backend priority (flash, mem-efficient, math) on a device of
        compute capability ``log.capability``."""
        major, minor = self.log.capability
        hd = (q.shape[-1], k.shape[-1], v.shape[-1])
        same = q.dtype == k.dtype == v.dtype
        flash = (same and q.dtype in HALF and max(hd) <= 256 and len(set(hd)) == 1 and hd[0] % 8 == 0
                 and scale is None  # check_scale_is_None: "Paddle's FAV2 does not support scale parameter"
                 and (not is_causal or q.shape[1] == k.shape[1]) and (8, 0) <= (major, minor) <= (12, 1))
        if flash:
            return "flash_attn"
        align = 8 if q.dtype in HALF else 4  # minimum_gemm_alignment with tensor cores (sm >= 8)
        mem = (same and q.dtype in (*HALF, paddle.float32) and all(d % align == 0 for d in hd)
               and (is_causal or mask is None or mask.shape[-1] % 8 == 0)  # check_attn_mask_alignment
               and (5, 0) <= (major, minor) <= (12, 1))
        return "mem_efficient" if mem else "math"

    def scaled_dot_product_attention(self, query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
                                     training=True, backend=None, scale=None, enable_gqa=True, name=None):
        kname = "scaled_dot_product_attention"
        _require(query.ndim == 4 and key.ndim == 4 and value.ndim == 4, kname,
                 f"q/k/v must be 4-D [batch, seq, heads, head_dim], got {query.shape}, {key.shape}, {value.shape}")
        h, hk, hv = query.shape[2], key.shape[2], value.shape[2]
        _require(h % hk == 0 and hk == hv, kname, f"GQA needs heads {h} divisible by key heads {hk} == value heads {hv}")
        _require(query.shape[0] == key.shape[0] == value.shape[0] and key.shape[1] == value.shape[1], kname,
                 f"batch / key length mismatch: {query.shape}, {key.shape}, {value.shape}")
        if attn_mask is not None:
            _require(attn_mask.dtype in (paddle.bool, query.dtype), kname,
                     f"attn_mask dtype {_name(attn_mask.dtype)} must be bool or the query's {_name(query.dtype)}")
            _require(attn_mask.ndim in (2, 3, 4) and attn_mask.shape[-1] == key.shape[1]
                     and attn_mask.shape[-2] in (1, query.shape[1]), kname,
                     f"attn_mask {attn_mask.shape} must broadcast to [batch, heads, {query.shape[1]}, {key.shape[1]}]")
            if attn_mask.ndim == 4:
                _require(attn_mask.shape[0] in (1, query.shape[0]) and attn_mask.shape[1] in (1, h), kname,
                         f"attn_mask {attn_mask.shape}: batch must be 1 or {query.shape[0]}, heads 1 or {h}")
        branch = self._sdpa_branch(query, key, value, attn_mask, is_causal, scale)
        self.log.calls[kname] += 1
        self.log.calls[f"sdpa:{branch}"] += 1
        if branch == "flash_attn" and attn_mask is not None:
            # the flash branch hands the mask to _C_ops.flash_attn, which takes [B, 1|H, 1|Lq, Lk] in q's dtype
            # and does not broadcast the batch axis (flash_attn_utils.h)
            _require(attn_mask.dtype == query.dtype and (attn_mask.ndim < 4 or attn_mask.shape[0] == query.shape[0]),
                     kname, f"flash mask {attn_mask.shape} {_name(attn_mask.dtype)}: needs q's dtype and batch")
        if branch == "mem_efficient" and _needs_backward(query, key, value):
            # sdpa passes is_test = not training to the kernel; memory_efficient_attention.cu then leaves the
            # log-sum-exp unwritten (`is_test ? nullptr`) and its grad kernel reads it: garbage gradients.
            _require(training, kname, "training=False while gradients flow: the mem_efficient kernel runs with "
                                      "is_test=True and its backward reads an unwritten log-sum-exp")
        mask = attn_mask
        if mask is not None and mask.dtype == paddle.bool:
            mask = paddle.where(mask, paddle.zeros([], "float32"), paddle.full([], -np.inf, "float32"))
        if is_causal:
            lq, lk = query.shape[1], key.shape[1]
            causal = np.triu(np.full((lq, lk), -np.inf, "float32"), k=lk - lq + 1)
            mask = paddle.to_tensor(causal) if mask is None else mask + paddle.to_tensor(causal)
        d = query.shape[-1]
        out = _attend_fp32(query, key, value, mask, d**-0.5 if scale is None else scale)
        return out.astype(query.dtype)

    # ----- paddle.nn.functional.flash_attention.flash_attn_unpadded -----
    def flash_attn_unpadded(self, query, key, value, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, scale,
                            dropout=0.0, causal=False, return_softmax=False, fixed_seed_offset=None, rng_name="",
                            training=True, name=None):
        kname = "flash_attn_unpadded"
        self.log.calls[kname] += 1
        # flash_attn_kernel.cu: PD_REGISTER_KERNEL(flash_attn_unpadded, GPU, ..., float16, bfloat16)
        _require(query.dtype in HALF, kname, f"kernel not registered for {_name(query.dtype)} (float16/bfloat16 only)")
        _require(query.dtype == key.dtype == value.dtype, kname, "q, k, v must share one dtype")
        _require(query.ndim == key.ndim == value.ndim == 3, kname,
                 f"q/k/v must be 3-D [total_tokens, heads, head_dim], got {query.shape}, {key.shape}, {value.shape}")
        hd = query.shape[-1]
        # Paddle's flash-attention fork, CHECK_FWD_EXECTUABLE: sm8x or sm90, head_dim % 8 == 0 and <= 256
        major, minor = self.log.capability
        _require(major == 8 or (major, minor) == (9, 0), kname, f"needs sm8x or sm90, this GPU is sm{major}{minor}")
        _require(hd % 8 == 0 and hd <= 256 and key.shape[-1] == hd == value.shape[-1], kname,
                 f"head_dim must be a multiple of 8 and <= 256 (and equal for q, k, v), got {hd}")
        _require(query.shape[1] % key.shape[1] == 0 and key.shape[1] == value.shape[1], kname,
                 f"heads {query.shape[1]} must be a multiple of key heads {key.shape[1]}")
        for label, cu, total, max_len in (("cu_seqlens_q", cu_seqlens_q, query.shape[0], max_seqlen_q),
                                          ("cu_seqlens_k", cu_seqlens_k, key.shape[0], max_seqlen_k)):
            _require(isinstance(cu, paddle.Tensor) and cu.dtype == paddle.int32 and cu.ndim == 1, kname,
                     f"{label} must be a 1-D int32 tensor")
            host = cu.numpy()
            _require(host[0] == 0 and host[-1] == total and (np.diff(host) >= 0).all(), kname,
                     f"{label} {host.tolist()} must rise from 0 to the {total} packed tokens")
            _require(isinstance(max_len, int) and max_len >= int(np.diff(host).max()), kname,
                     f"max_seqlen {max_len!r} must be a Python int >= the longest segment")
        _require(cu_seqlens_q.shape == cu_seqlens_k.shape, kname, "cu_seqlens_q and cu_seqlens_k differ in length")
        bounds_q, bounds_k = cu_seqlens_q.numpy(), cu_seqlens_k.numpy()
        outs = []
        for i in range(len(bounds_q) - 1):
            sq, sk = slice(int(bounds_q[i]), int(bounds_q[i + 1])), slice(int(bounds_k[i]), int(bounds_k[i + 1]))
            lq, lk = sq.stop - sq.start, sk.stop - sk.start
            mask = None
            if causal:  # bottom-right aligned, as flash-attention 2
                mask = paddle.to_tensor(np.triu(np.full((lq, lk), -np.inf, "float32"), k=lk - lq + 1))
            outs.append(_attend_fp32(query[sq].unsqueeze(0), key[sk].unsqueeze(0), value[sk].unsqueeze(0), mask,
                                     scale)[0])  # (len, H, D)
        return paddle.concat(outs, axis=0).astype(query.dtype), None

    # ----- paddle.incubate.nn.functional.fused_rms_norm (3.3: _C_ops.fused_rms_norm_quant) -----
    def fused_rms_norm(self, x, norm_weight, norm_bias, epsilon, begin_norm_axis=1, bias=None, residual=None,
                       quant_scale=-1, quant_round_type=0, quant_max_bound=0, quant_min_bound=0):
        kname = "fused_rms_norm"
        self.log.calls[kname] += 1
        # GPU kernel registered for float, float16, bfloat16 (fused_rms_norm_quant); the weight must be x's dtype.
        _require(x.dtype in (*HALF, paddle.float32), kname, f"no GPU kernel for {_name(x.dtype)}")
        _require(norm_weight.dtype == x.dtype, kname,
                 f"norm_weight dtype {_name(norm_weight.dtype)} must equal x's {_name(x.dtype)}")
        axis = begin_norm_axis + x.ndim if begin_norm_axis < 0 else begin_norm_axis
        _require(0 <= axis < x.ndim, kname, f"begin_norm_axis must be in [0, {x.ndim}), got {begin_norm_axis}")
        cols = int(np.prod(x.shape[axis:]))
        _require(int(norm_weight.numel()) == cols, kname, f"norm_weight has {int(norm_weight.numel())} elements, "
                                                          f"the normalized axes {cols}")
        _require(norm_bias is None and bias is None and residual is None and quant_scale <= 0, kname + " double",
                 "models the plain RMSNorm call only")
        shape = x.shape
        xf = _fp32(x).reshape([-1, cols])
        inv = paddle.rsqrt((xf * xf).mean(axis=-1, keepdim=True) + epsilon)  # (rows, 1)
        out = (xf * inv * _fp32(norm_weight).reshape([1, cols])).astype(x.dtype).reshape(shape)  # one rounding
        return out, None  # dygraph returns (out, residual_out); inv_var only in static graphs

    # ----- paddle.nn.functional.swiglu -----
    def swiglu(self, x, y=None, name=None):
        kname = "swiglu"
        self.log.calls[kname] += 1
        _require(x.dtype in (*HALF, paddle.float32, paddle.float64), kname, f"no GPU kernel for {_name(x.dtype)}")
        if y is None:
            _require(x.shape[-1] % 2 == 0, kname, f"the last axis {x.shape[-1]} must split into two halves")
            x, y = paddle.split(x, 2, axis=-1)
        else:
            _require(y.dtype == x.dtype and y.shape == x.shape, kname,
                     f"x {x.shape} {_name(x.dtype)} and y {y.shape} {_name(y.dtype)} must match")
        xf = _fp32(x)
        return (xf * paddle.nn.functional.sigmoid(xf) * _fp32(y)).astype(x.dtype)


@contextlib.contextmanager
def gpu_contracts(capability: tuple[int, int] = (8, 0)) -> Iterator[ContractLog]:
    """Inside the block every op dispatches as on a GPU of ``capability`` (sm80: A100 by default), and
    Paddle's GPU kernels are replaced by the contract doubles above. Yields the log of calls."""
    log = ContractLog(capability=tuple(capability))
    with dispatch.simulate_device("gpu"), gpu_kernels.substituted(Doubles(log).table()):
        yield log
