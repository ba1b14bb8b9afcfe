"""GPU memory of full-parameter GRPO per device, itemized: a model of what the GPU code path allocates.

``python -m paddlemix_r1.distributed.memory`` prints the tables of docs/distributed.md; the tests check the
arithmetic, that the docs carry exactly the computed tables, and ``parameter_shapes`` against the model classes.

NOTHING HERE HAS BEEN MEASURED ON A GPU. The model describes the GPU path AS FIXED by the audit
(/work/shared/reviews/gpu_audit.md), not the code it audited:
- B10: ``gradient_checkpointing`` recomputes every decoder layer (the trainer calls ``model.train()``);
- B2: decoder attention is Paddle's flash kernel (``scaled_dot_product_attention`` without ``scale=``, additive
  bf16 mask), so no (B, heads, Lq, K) score matrix exists; ``flash=False`` prices the math path instead;
- B12: the gradient norm holds one fp32 gradient (and its square) at a time, not all of them;
- R4(e): GPU rollouts do not build packed q/k/v/gate/up copies (``packed_projection_bytes`` is what they cost).
Where a number depends on Paddle internals, the source that was read is named next to it. ``UNVERIFIED`` lists
what a GPU has to confirm; ``decoder_layer_peak_bytes`` is the number a one-layer GPU measurement checks.

Per device, for P parameters (P_t of them trainable), N ranks, b bytes per element of the policy dtype:

  persistent                   stage 0        stage 1 = 2 (Paddle runs "os" as "os_g")   stage 3
    weights      b P           whole          whole                                      sliced / N + unsliced whole
    fp32 master  4 P_t         whole          the rank's whole parameters (greedy split)  sliced / N + unsliced whole
    Adam m + v   8 P_t         whole          same share                                  sliced / N + unsliced whole
    gradients    b P_t         whole *        same share                                  sliced / N + unsliced whole
    reference    b_ref P       on the GPU, or 0 with ref_model_offload (then b_ref P during its pass only)
  (* stage 0 frees them after each step; stage 1/2 zero them; stage 3 keeps the unsliced ones.)

"Unsliced" (stage 3, Paddle's ``GroupShardedStage3._flatten_layer_params`` / ``_handle_unslice_params``):
parameters of <= 2**20 elements and the layers passed as ``exclude_layer`` (our LM head, and the embedding when
tied) stay whole on every rank WITH whole fp32 master weights, Adam moments and gradient storage.
"Greedy split" (stages 1/2, ``GroupShardedOptimizerStage2._segment_params``): whole parameters, in model order,
each to the rank with the fewest elements so far; the budget is for the most loaded rank.

Activations of the policy's micro-batch (``activation_terms``; ``decoder_layer_memory`` itemizes one layer's
saved tensors S and its forward/backward moments), for a pass with t tokens per layer and n decoder layers:
  recompute off:  n * (S + t H b) + t H b          every layer's saved tensors next to its input
  recompute on:   (n + 1) * t H b + n * kv_kept     every layer's input (+ the final norm's), the K/V a layer keeps
                  + one layer's peak - t H b        (prompt pass: its K/V outputs; completion pass: the repeated
                                                    prompt K/V it reads), and ONE layer's full activations during
                                                    its recompute + backward
  both:           + the vision tower's saved activations (never recomputed) + the LM head's input, and the largest
                  of: LM-head backward (fp32 V x H accumulator ...), one layer's backward, the vision backward.
The gradient pass shares each prompt's decoder pass among its G completions (``shares_prompt``) at every stage:
the decoder's non-reentrant recompute completes each gradient once per backward, as stage 2's reduce hooks need.

Transient memory, by phase of a step; the total of a row is the largest phase:
  startup          the policy built in fp32 then cast (from_pretrained), and the GPU reference the same way
  rollout          KV caches (prompt once + G completions), one prefill layer's working set
  reference pass   the reference on the GPU (moved in if offloaded) + a no-grad log-prob pass
  policy backward  gradients + the activations of the policy's micro-batch (``activation_bytes``), plus the
                   sharding wrappers' in-flight buffers
  gradient reduce  stage 0: fp32 all-reduce bucket and fp32 gradient-norm temporaries
  save             stage 3: one gathered full parameter at a time (copied to the host); ``_hf_state`` moves each
                   tensor to the host before transposing it (``save_transposes_on_device`` prices the old copies)
Not included anywhere: the CUDA context, cuBLAS/cuDNN workspaces, NCCL buffers, allocator fragmentation
(count 2 to 5 GB), and the optimizer kernel's own temporaries (AdamW updates in place).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

GB = 1e9  # decimal gigabytes, as GPU capacities are quoted (an "80 GB" A100/H100 holds 85.9e9 bytes)

SEGMENT_SIZE = 2**20  # group_sharded_parallel(segment_size=2**20): larger parameters are sliced under stage 3
STAGE2_BUCKET = 2**23  # GroupShardedStage2(buffer_max_size=2**23): gradient bucket elements per (dtype, rank)
ALLREDUCE_BUCKET = 1 << 25  # distributed/collectives.py DEFAULT_BUCKET_NUMEL (fp32 elements per all-reduce)

# What a GPU has to confirm before these numbers are trusted; docs/distributed.md lists it.
UNVERIFIED = (
    "Paddle's flash kernel is taken for the decoder (sm80/sm90, bf16, head_dim % 8 == 0 and <= 256) and saves "
    "q, k, v, the output, the fp32 log-sum-exp and the bf16 mask; its backward allocates an fp32 dq accumulator "
    "(B, heads, Lq rounded to 128, head_dim rounded to 32) and, for GQA, (B, Lk, heads, head_dim) dk/dv buffers "
    "(flash_attn_grad_kernel.cu, flash_attn_utils.h as read; not run)",
    "transposed K/V views are copied to contiguous tensors for the flash kernel only in the completion pass "
    "(keys = prompt + completion); in the prompt pass the two transposes cancel",
    "fused_rms_norm saves its input and an fp32 inv_var; fused_rotary_position_embedding saves only its bf16 "
    "sin/cos tables; F.swiglu saves gate and up; F.linear saves its input",
    "fleet.utils.recompute keeps each layer's tensor inputs (also the repeated prompt K/V of the completion pass) "
    "and its outputs; repeat_interleave keeps its input (measured on CPU, Paddle 3.3.1)",
    "a parameter gradient computed in the backward is a fresh tensor until it is added to .grad (one at a time)",
    "the vision tower (not recomputed) rotates q/k in fp32 (the eager rotary keeps the fp32 q/k and their "
    "rotate-half product) and, with a bf16 policy, runs flash_attn_unpadded (an fp32 policy takes the exact "
    "eager attention, which keeps each image's or window's (heads, M, M) fp32 scores; not in these tables)",
    "the LM-head backward (ops/logprobs.py) peaks at the weight-gradient add: fp32 V x H accumulator, the bf16 "
    "V x H product and its fp32 cast, plus the chunk's logits, their gradient and a contiguous copy of its transpose",
    "stage 3 working set: at most one gathered full parameter, its full gradient before the all-reduce and "
    "slicing, and the next parameter prefetched (gathers are per layer that owns parameters: each Linear, the "
    "embedding)",
    "stage 1/2: the other ranks' gradient buckets (2**23 elements each) are allocated during the backward and "
    "released after their reduce; a non-owned gradient lives until its reduce hook",
    "stage 3 + sharding_offload keeps weight slices, fp32 master weights, Adam moments and gradient slices in "
    "host memory (audit R5: never run; slow)",
    "the B12 fix holds one fp32 gradient and its square at a time (8 bytes x the largest parameter)",
    "gradients count whole for the whole policy backward (true from a step's second micro-batch on; conservative "
    "for the first), and Decoder.rope_tables' fp32 cos/sin expanded over all heads stay alive under recompute",
)


@dataclass(frozen=True)
class Architecture:
    """The config.json numbers a parameter count and the activation model need."""

    name: str
    family: str  # "qwen2_vl" | "qwen2_5_vl"
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    tie_word_embeddings: bool
    vision_depth: int
    vision_dim: int
    vision_intermediate: int
    vision_out: int
    patch_size: int = 14
    temporal_patch_size: int = 2
    in_channels: int = 3
    spatial_merge_size: int = 2
    vision_heads: int = 16

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @classmethod
    def from_model_config(cls, cfg, name: str = "") -> Architecture:
        """From a ``paddlemix_r1.models.config.ModelConfig``."""
        t, v = cfg.text, cfg.vision
        return cls(name=name or cfg.model_type, family=cfg.model_type, vocab_size=t.vocab_size,
                   hidden_size=t.hidden_size, intermediate_size=t.intermediate_size, num_layers=t.num_hidden_layers,
                   num_heads=t.num_attention_heads, num_kv_heads=t.num_key_value_heads,
                   tie_word_embeddings=cfg.tie_word_embeddings, vision_depth=v.depth, vision_dim=v.embed_dim,
                   vision_intermediate=v.intermediate_size, vision_out=v.out_hidden_size, patch_size=v.patch_size,
                   temporal_patch_size=v.temporal_patch_size, in_channels=v.in_channels,
                   spatial_merge_size=v.spatial_merge_size, vision_heads=v.num_heads)


# Published config.json values of Qwen/Qwen2.5-VL-3B-Instruct and Qwen/Qwen2.5-VL-7B-Instruct.
QWEN2_5_VL_3B = Architecture(
    name="Qwen2.5-VL-3B", family="qwen2_5_vl", vocab_size=151936, hidden_size=2048, intermediate_size=11008,
    num_layers=36, num_heads=16, num_kv_heads=2, tie_word_embeddings=True, vision_depth=32, vision_dim=1280,
    vision_intermediate=3420, vision_out=2048)
QWEN2_5_VL_7B = Architecture(
    name="Qwen2.5-VL-7B", family="qwen2_5_vl", vocab_size=152064, hidden_size=3584, intermediate_size=18944,
    num_layers=28, num_heads=28, num_kv_heads=4, tie_word_embeddings=False, vision_depth=32, vision_dim=1280,
    vision_intermediate=3420, vision_out=3584)


# ----------------------------------------------------------------------------------------------------------------
# parameters
# ----------------------------------------------------------------------------------------------------------------

def _linear(prefix: str, n_in: int, n_out: int, bias: bool) -> list[tuple[str, tuple[int, ...]]]:
    out = [(f"{prefix}.weight", (n_in, n_out))]  # Paddle layout (in, out)
    return out + [(f"{prefix}.bias", (n_out,))] if bias else out


def parameter_shapes(a: Architecture) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of every parameter of our model classes, in ``model.parameters()`` order (the order Paddle's
    stage-1/2 optimizer splits them in). A tied LM head is the embedding itself and is not listed twice."""
    e, vi = a.vision_dim, a.vision_intermediate
    p: list[tuple[str, tuple[int, ...]]] = [
        ("visual.patch_embed.proj.weight", (e, a.in_channels, a.temporal_patch_size, a.patch_size, a.patch_size))]
    for i in range(a.vision_depth):
        blk = f"visual.blocks.{i}"
        if a.family == "qwen2_5_vl":  # RMSNorm x2, attention, gated MLP with bias
            p += [(f"{blk}.norm1.weight", (e,)), (f"{blk}.norm2.weight", (e,))]
            mlp = (_linear(f"{blk}.mlp.gate_proj", e, vi, True) + _linear(f"{blk}.mlp.up_proj", e, vi, True)
                   + _linear(f"{blk}.mlp.down_proj", vi, e, True))
        elif a.family == "qwen2_vl":  # LayerNorm x2, attention, fc1/fc2 MLP
            p += [(f"{blk}.norm1.weight", (e,)), (f"{blk}.norm1.bias", (e,)),
                  (f"{blk}.norm2.weight", (e,)), (f"{blk}.norm2.bias", (e,))]
            mlp = _linear(f"{blk}.mlp.fc1", e, vi, True) + _linear(f"{blk}.mlp.fc2", vi, e, True)
        else:
            raise ValueError(f"unknown family {a.family!r}")
        p += _linear(f"{blk}.attn.qkv", e, 3 * e, True) + _linear(f"{blk}.attn.proj", e, e, True) + mlp
    p += [("visual.merger.ln_q.weight", (e,))]
    if a.family == "qwen2_vl":
        p += [("visual.merger.ln_q.bias", (e,))]
    m = e * a.spatial_merge_size**2
    p += _linear("visual.merger.mlp.0", m, m, True) + _linear("visual.merger.mlp.2", m, a.vision_out, True)

    h, q, kv = a.hidden_size, a.num_heads * a.head_dim, a.num_kv_heads * a.head_dim
    p += [("model.embed_tokens.weight", (a.vocab_size, h))]
    for i in range(a.num_layers):
        lay = f"model.layers.{i}"
        p += (_linear(f"{lay}.self_attn.q_proj", h, q, True) + _linear(f"{lay}.self_attn.k_proj", h, kv, True)
              + _linear(f"{lay}.self_attn.v_proj", h, kv, True) + _linear(f"{lay}.self_attn.o_proj", q, h, False)
              + _linear(f"{lay}.mlp.gate_proj", h, a.intermediate_size, False)
              + _linear(f"{lay}.mlp.up_proj", h, a.intermediate_size, False)
              + _linear(f"{lay}.mlp.down_proj", a.intermediate_size, h, False)
              + [(f"{lay}.input_layernorm.weight", (h,)), (f"{lay}.post_attention_layernorm.weight", (h,))])
    p += [("model.norm.weight", (h,))]
    if not a.tie_word_embeddings:
        p += [("lm_head.weight", (a.vocab_size, h))]
    return p


def _numel(shape: Iterable[int]) -> int:
    return math.prod(shape)


def count_parameters(a: Architecture) -> dict[str, int]:
    """Parameters of our model classes by part: {"vision", "decoder", "lm_head", "total"}."""
    parts = {"vision": 0, "decoder": 0, "lm_head": 0}
    for name, shape in parameter_shapes(a):
        part = "vision" if name.startswith("visual.") else "lm_head" if name.startswith("lm_head.") else "decoder"
        parts[part] += _numel(shape)
    return {**parts, "total": sum(parts.values())}


def linear_weight_numel(a: Architecture) -> int:
    """Elements of every ``nn.Linear`` weight (what ``models/checkpoint.py::_hf_state`` transposes on save): the
    vision qkv/proj/MLP, merger and decoder projections; not the embedding, LM head, patch embedding or norms."""
    return sum(_numel(s) for n, s in parameter_shapes(a)
               if n.endswith(".weight") and len(s) == 2 and not n.startswith(("model.embed_tokens", "lm_head")))


def _trainable(name: str, train_vision: bool) -> bool:
    return train_vision or not name.startswith("visual.")


def stage3_split(a: Architecture, train_vision: bool = True, segment_size: int = SEGMENT_SIZE) -> dict[str, int]:
    """Elements by how ``GroupShardedStage3`` holds them: {"sliced_trainable", "sliced_frozen",
    "unsliced_trainable", "whole_frozen"}. Excluded layers (``distributed/sharding.py``: the LM head, and the
    embedding when tied) and trainable parameters of <= ``segment_size`` elements are unsliced: whole weights,
    master weights, Adam moments and gradient storage on every rank. Frozen small parameters stay whole, weights only."""
    excluded = {"lm_head.weight"} | ({"model.embed_tokens.weight"} if a.tie_word_embeddings else set())
    out = dict.fromkeys(("sliced_trainable", "sliced_frozen", "unsliced_trainable", "whole_frozen"), 0)
    for name, shape in parameter_shapes(a):
        n, trainable = _numel(shape), _trainable(name, train_vision)
        if name in excluded:
            out["unsliced_trainable" if trainable else "whole_frozen"] += n
        elif n > segment_size:
            out["sliced_trainable" if trainable else "sliced_frozen"] += n
        else:
            out["unsliced_trainable" if trainable else "whole_frozen"] += n
    return out


def _sliced_sizes(a: Architecture, segment_size: int = SEGMENT_SIZE) -> list[int]:
    """Elements of every parameter stage 3 slices (trainable or not), largest first."""
    excluded = {"lm_head.weight"} | ({"model.embed_tokens.weight"} if a.tie_word_embeddings else set())
    return sorted((_numel(s) for name, s in parameter_shapes(a) if _numel(s) > segment_size and name not in excluded),
                  reverse=True)


def _largest_sliced(a: Architecture) -> int:
    return max(_sliced_sizes(a), default=0)


def stage2_rank_elements(a: Architecture, num_ranks: int, train_vision: bool = True) -> list[int]:
    """Trainable elements each rank owns under Paddle's stage-1/2 optimizer: whole parameters in model order, each
    to the rank with the fewest elements so far (``GroupShardedOptimizerStage2._segment_params``)."""
    sizes = [0] * num_ranks
    for name, shape in parameter_shapes(a):
        if _trainable(name, train_vision):
            sizes[sizes.index(min(sizes))] += _numel(shape)
    return sizes


def packed_projection_bytes(a: Architecture, dtype_bytes: int = 2) -> int:
    """What the packed decoder copy (generation/packing.py) holds during a rollout: per layer the concatenated q/k/v and
    gate/up weights. Audit R4(e): GPU rollouts no longer pack (CPU only), so this is NOT in the budget."""
    h = a.hidden_size
    per_layer = h * ((a.num_heads + 2 * a.num_kv_heads) * a.head_dim + 2 * a.intermediate_size)
    return a.num_layers * per_layer * dtype_bytes


# ----------------------------------------------------------------------------------------------------------------
# one decoder layer
# ----------------------------------------------------------------------------------------------------------------

def _ceil(x: int, m: int) -> int:
    return -(-x // m) * m


def attention_score_bytes(sequences: int, q_len: int, k_len: int, heads: int, dtype_bytes: int = 2) -> int:
    """One (B, heads, Lq, K) score/probability matrix: what the math path materializes and flash never does."""
    return sequences * heads * q_len * k_len * dtype_bytes


@dataclass(frozen=True)
class LayerMemory:
    """One decoder layer's forward + backward, bytes above the level before its forward.

    ``saved``: tensors the forward keeps for the backward (without recompute); ``steps``: bytes alive at each
    moment that can be the peak; ``output``: the layer output (the next layer's input in a stack)."""

    saved: dict[str, int]
    steps: dict[str, int]
    output: int

    @property
    def saved_bytes(self) -> int:
        return sum(self.saved.values())

    @property
    def peak(self) -> int:
        return max(self.steps.values())

    @property
    def peak_step(self) -> str:
        return max(self.steps, key=self.steps.__getitem__)


def decoder_layer_memory(a: Architecture, sequences: int, q_len: int, prefix_len: int = 0, dtype_bytes: int = 2,
                         recompute: bool = False, flash: bool = True, dense_mask: bool = True) -> LayerMemory:
    """One ``DecoderLayer`` forward + backward on the fused GPU path, itemized.

    ``sequences`` rows of ``q_len`` query tokens attend to ``prefix_len`` earlier keys (the shared prompt in the
    completion pass) plus their own. ``flash``: Paddle's flash kernel (no score matrix); False: sdpa's math branch
    (q scaled copy, K/V repeated to all heads for GQA, the probabilities saved; two more score matrices in the
    backward). ``dense_mask``: the (B, 1, Lq, K) additive mask cast to bf16 per layer (sdpa's flash branch with a
    mask); False for a mask-free varlen kernel. ``recompute``: the layer runs under ``fleet.utils.recompute``
    (its no-grad forward keeps the output only; the backward re-runs the forward: everything below plus the
    recomputed output).

    The baseline (not counted) holds the parameters and their gradients, the layer input, the fp32 rotary tables
    and mask, and any prefix keys/values. Counted: the saved activations, the output, the incoming output gradient,
    the activation gradients and backward workspaces, and a parameter gradient while it is a fresh tensor.
    """
    b = dtype_bytes
    h, inter, nh, nkv, hd = a.hidden_size, a.intermediate_size, a.num_heads, a.num_kv_heads, a.head_dim
    dq, dkv = nh * hd, nkv * hd
    k_len = q_len + prefix_len
    t, tk = sequences * q_len, sequences * k_len
    th = t * h * b  # one (tokens, hidden) tensor
    kv = 2 * tk * dkv * b
    kv_copy = kv if prefix_len else 0  # contiguous copies of the transposed K/V views (completion pass)
    scores = attention_score_bytes(sequences, q_len, k_len, nh, b)

    saved = {
        "input_layernorm output": th,
        "rms inv_var x2 (fp32)": 2 * 4 * t,
        "rotary sin/cos (bf16)": 2 * t * hd * b,
        "attention mask (bf16)": sequences * q_len * k_len * b if dense_mask else 0,
    }
    if flash:
        saved |= {"q (rotated)": t * dq * b, "k, v": kv, "attention output": t * dq * b,
                  "softmax lse (fp32)": sequences * nh * _ceil(q_len, 128) * 4}
    else:
        kv_kept = 2 * tk * dq * b if nh != nkv else kv  # sdpa's _repeat_kv copies for GQA, else the views
        saved |= {"q scaled copy": t * dq * b, "k, v (repeated to all heads)": kv_kept, "probabilities": scores,
                  "attention output": t * dq * b}
    saved |= {"residual after attention": th, "post_attention_layernorm output": th,
              "gate, up": 2 * t * inter * b, "swiglu output": t * inter * b}
    s = sum(saved.values())
    mlp_keys = ("residual after attention", "post_attention_layernorm output", "gate, up", "swiglu output")
    s_attn = s - sum(saved[k] for k in mlp_keys)
    y = g = th  # the output, and the incoming gradient of the output

    steps = {}
    if flash:  # the kernel's contiguous K/V copies next to what the attention block has saved
        steps["forward: attention"] = s_attn + kv_copy
    else:  # at the softmax: the masked product and the probabilities (the unmasked product is freed by then)
        steps["forward: attention"] = s_attn + scores
    steps["forward: last residual add"] = s + th + y  # the down projection's output and the layer output

    base = s + y + g
    steps["backward: down_proj"] = base + t * inter * b + inter * h * b
    steps["backward: swiglu"] = base + 2 * t * inter * b  # swiglu output freed, its gradient + d gate, d up
    steps["backward: gate/up projections"] = base - t * inter * b + th + h * inter * b
    d_out = t * dq * b
    steps["backward: o_proj"] = s_attn + y + g + d_out + dq * h * b
    if flash:
        gqa_tmp = 2 * tk * dq * b if nkv != nh else 0  # flash_attn_grad_kernel.cu dk_tmp/dv_tmp
        dq_accum = sequences * nh * _ceil(q_len, 128) * _ceil(hd, 32) * 4
        softmax_d = sequences * nh * _ceil(q_len, 128) * 4
        steps["backward: attention"] = (s_attn + y + g + d_out + t * dq * b + kv + gqa_tmp + dq_accum + softmax_d
                                        + kv_copy)
    else:  # d probabilities and d scores next to the saved probabilities, and d V (repeated)
        dv_rep = tk * dq * b if nh != nkv else kv // 2
        steps["backward: attention"] = s_attn + y + g + d_out + 2 * scores + dv_rep
    steps["backward: q/k/v projections"] = (saved["input_layernorm output"] + saved["rms inv_var x2 (fp32)"] // 2
                                            + y + g + t * (dq + 2 * dkv) * b + th + h * dq * b)
    if recompute:
        # The no-grad forward keeps only its output y (its largest moment: the MLP's gate, up and product next to
        # the residual and the normed input). The backward re-runs the forward with gradients once the output
        # gradient g exists, so every step above happens again next to the first y: the re-run forward's steps
        # with y and g, the backward's (which count g and the recomputed output already) with y.
        no_grad = 2 * th + 3 * t * inter * b + y
        rerun = dict(("recompute " + k, v + y + g) if k.startswith("forward") else (k, v + y) for k, v in steps.items())
        steps = {"no-grad forward": no_grad, **rerun}
    return LayerMemory(saved=saved, steps=steps, output=y)


def decoder_layer_peak_bytes(arch: Architecture, tokens: int, dtype_bytes: int = 2, recompute: bool = False,
                             flash: bool = True, *, sequences: int = 1, prefix_tokens: int = 0,
                             dense_mask: bool = True) -> int:
    """Predicted peak memory of ONE decoder layer's forward + backward over ``tokens`` query tokens (``sequences``
    rows of ``tokens / sequences``), in bytes above the memory allocated just before the forward.

    Peak = max over the steps of ``decoder_layer_memory``. For flash, one sequence of t tokens, no prefix, dense
    mask, H hidden, I intermediate, q = heads * head_dim, kv = kv_heads * head_dim, b bytes, it is (tested for the
    3B and 7B shapes, where an MLP backward step is the largest):
        saved S = t*b*(3H + 3I + 2q + 2kv + 2*head_dim) + 8t + heads*ceil(t/128)*128*4 + t*t*b
        peak    = S + 2*t*H*b + b*max(t*I + I*H, 2*t*I)          [+ t*H*b with recompute]
    i.e. the saved activations, the output and its gradient, and either the down projection's input gradient
    next to its fresh weight gradient (t < H) or the swiglu's two input gradients (t > H).

    How a GPU self-check measures the same quantity (``paddle.device.cuda`` counters): build one
    ``models.decoder.DecoderLayer`` in bf16, run one warm-up forward + backward so every parameter has a
    ``.grad``; make x (sequences, tokens/sequences, H) bf16 with ``stop_gradient=False``, cos/sin from
    ``Decoder.rope_tables`` and the fp32 mask from ``ops.causal_padding_mask``; clear x's gradient; synchronize,
    read ``memory_allocated()`` and reset the peak; run ``y = layer(x, cos, sin, mask, None, 0)`` (with
    recompute: ``fleet.utils.recompute(layer, x, cos, sin, mask, None, 0)``), create ``dy = ones_like(y)``,
    ``y.backward(dy)``; the prediction is ``max_memory_allocated() - that reading``. Allocator rounding and
    cuBLAS workspaces are not modelled: expect agreement within ~10%, not to the byte.
    """
    if tokens < 1 or sequences < 1 or tokens % sequences:
        raise ValueError(f"tokens ({tokens}) must be a positive multiple of sequences ({sequences})")
    return decoder_layer_memory(arch, sequences, tokens // sequences, prefix_tokens, dtype_bytes, recompute, flash,
                                dense_mask).peak


# ----------------------------------------------------------------------------------------------------------------
# the policy's micro-batch
# ----------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Workload:
    """One rank's step. Defaults: the REC recipe (configs/rec_qwen2_5_vl_3b.yaml) on 8 GPUs: one prompt per rank
    and micro-batch, G = 8 completions (``sequences`` rows), prompts up to 1024 tokens of which ``image_tokens`` are
    image tokens (960: the largest image a 1024-token prompt admits next to ~64 text tokens; a COCO image is
    ~400), completions up to 256, bf16 policy and reference, temperature 1, vision tower trained."""

    num_gpus: int = 8
    sequences: int = 8
    prompt_tokens: int = 1024
    completion_tokens: int = 256
    logprob_chunk: int = 512
    recompute: bool = True
    ref_offload: bool = False
    prompts: int = 1
    image_tokens: int = 960
    train_vision: bool = True
    dtype_bytes: int = 2
    ref_dtype_bytes: int = 2
    reference: bool = True  # beta != 0
    flash: bool = True
    dense_mask: bool = True
    temperature: float = 1.0
    sharding_offload: bool = False
    ranks_per_node: int = 8
    shared_prefix: bool | None = None  # None: as the trainer does (``shares_prompt``); False prices the plain forward
    # What the current code does. The reference is built in fp32 before its cast (models/checkpoint.py
    # from_pretrained: True). _hf_state moves each tensor to the host before transposing it (False; True prices the
    # audited code, whose .T.contiguous() copies of every linear weight sat on the device at once, audit R4(d)).
    ref_built_in_fp32: bool = True
    save_transposes_on_device: bool = False

    @property
    def group_size(self) -> int:
        if self.sequences % self.prompts:
            raise ValueError(f"sequences ({self.sequences}) must be a multiple of prompts ({self.prompts})")
        return self.sequences // self.prompts



def lm_head_memory(a: Architecture, rows: int, chunk: int, dtype_bytes: int = 2, temperature: float = 1.0
                   ) -> dict[str, int]:
    """``ops/logprobs.py::selective_log_softmax_and_entropy_from_hidden`` over ``rows`` hidden states: what it saves
    and the peaks of its chunked forward (with entropy) and backward, bytes.

    Backward, per chunk of c rows: logits (c, V) in the weight dtype, their fp32 gradient, the gradient cast back,
    a contiguous copy of its transpose for the weight-gradient matmul; the weight gradient accumulates in an fp32
    V x H buffer, to which each chunk's bf16 V x H product is added after an fp32 cast (the audit's 1.2 + 0.6 +
    1.2 GB for the 3B). An fp32 weight accumulates in place (addmm_) instead."""
    b, v, h = dtype_bytes, a.vocab_size, a.hidden_size
    c = min(chunk, rows)
    cv = c * v
    vh = v * h
    scaled = cv * 4 if temperature != 1.0 else 0
    z = cv * 4 if b != 4 else 0  # astype(fp32) of bf16 logits; a no-op for fp32
    acc = vh * 4
    grad_hidden = rows * h * b
    if b != 4:
        weight_grad = cv * b + cv * b + cv * b + vh * b + vh * 4  # logits, grad, transpose copy, product, cast
    else:
        weight_grad = cv * 4 + cv * 4 + cv * 4  # in-place addmm_
    chunk_grad = cv * b + z + cv * 4  # logits, their fp32 cast, the fp32 gradient buffer
    final_cast = vh * b if b != 4 else 0  # grad_weight.astype(weight dtype); a same-dtype astype is the tensor itself
    return {
        "saved": rows * h * b + rows * 4 + rows * 8,  # hidden, lse, index
        "forward peak": cv * b + z + scaled + 2 * cv * 4,  # logits, z, (z / T), log p, p log p
        "backward peak": grad_hidden + acc + max(weight_grad, chunk_grad, final_cast),
        "fp32 weight-gradient accumulator": acc,
    }


def vision_memory(a: Architecture, patches: int, dtype_bytes: int = 2) -> dict[str, int]:
    """The vision tower's forward + backward when it is trained (it is not recomputed), bytes.

    Per patch and block (bf16, GPU path): norm1/norm2 outputs, the qkv projection (kept whole: v is a view of it),
    the fp32 q/k and their fp32 rotate-half product (eager fp32 rotary), the bf16 rotated q/k, the flash output,
    the residual, gate/up and their product (Qwen2-VL: fc1, sigmoid, product), the block output; LayerNorm (Qwen2-VL)
    also keeps an fp32 copy of its input. Shared: fp32 rotary tables (1, N, 2 heads, head_dim) x 2, the bf16
    patches, the merger's norm, fc1, GELU and output."""
    b, e, vi, n = dtype_bytes, a.vision_dim, a.vision_intermediate, patches
    norm_extra = 4 + (4 * e + 4 if a.family == "qwen2_vl" else 0)  # inv_var / mean+var, fp32 input copy
    per_block = (e * b * 10 + 16 * e + 3 * vi * b + 2 * norm_extra + a.vision_heads * 4)
    merger = n * (3 * e * b + norm_extra) + (n // a.spatial_merge_size**2) * a.vision_out * b
    patch_in = n * a.in_channels * a.temporal_patch_size * a.patch_size**2 * b
    tables = 2 * n * 2 * e * 4
    saved = n * per_block * a.vision_depth + merger + patch_in + tables
    backward = n * (2 * e * b + 2 * vi * b + 2 * 2 * e * 4)  # output grad, MLP grads, fp32 rotary grads
    return {"saved": saved, "backward working set": backward}


def shares_prompt(w: Workload, stage: int = 0) -> bool:
    """Whether the policy's gradient pass computes each prompt once for its G completions (``shared_prefix``):
    what the trainer does at every stage, unless ``w.shared_prefix`` says otherwise. ``stage`` is kept for callers
    that price a stage-specific choice."""
    del stage
    return True if w.shared_prefix is None else w.shared_prefix


def activation_terms(a: Architecture, w: Workload, stage: int = 0) -> dict[str, int]:
    """The policy's micro-batch (``grpo/logprobs.py::completion_logprobs``), bytes: what is kept for the backward
    (``*_kept``) and the candidate peaks (``peak: ...``).

    Shared prompt (``shares_prompt``): a prompt pass of ``prompts`` rows of L tokens, then a completion pass of
    ``sequences`` rows of T tokens over L + T keys. Plain forward: ``sequences`` rows of L + T tokens. With recompute
    a layer keeps its inputs (the prompt pass also its K/V outputs, the completion pass the repeated prompt K/V it
    reads), and one layer at a time holds its full activations; without, every layer keeps
    ``decoder_layer_memory(...).saved``. The vision tower runs once per prompt either way and is not recomputed."""
    b = w.dtype_bytes
    h, nkv, hd, layers = a.hidden_size, a.num_kv_heads, a.head_dim, a.num_layers
    dkv = nkv * hd
    bp, n, length, t = w.prompts, w.sequences, w.prompt_tokens, w.completion_tokens
    _ = w.group_size  # validates sequences / prompts
    rows = n * t
    head = lm_head_memory(a, rows, w.logprob_chunk, b, w.temperature)
    patches = bp * w.image_tokens * a.spatial_merge_size**2  # each prompt's image once, before the merge
    vis = vision_memory(a, patches, b) if w.train_vision else {"saved": 0, "backward working set": 0}

    def pass_kept(layer: LayerMemory, tokens: int, extra_per_layer: int) -> int:
        """A pass's decoder memory kept for the backward: every layer's input (and the final norm's), its inv_var."""
        if w.recompute:
            return (layers + 1) * tokens * h * b + layers * extra_per_layer + 4 * tokens
        return layers * (layer.saved_bytes + tokens * h * b) + tokens * h * b + 4 * tokens

    def tables(rws: int, q_len: int, k_len: int) -> int:  # fp32 rotary cos/sin (not expanded on GPU) and mask
        return 2 * rws * q_len * hd * 4 + 4 * rws * q_len * k_len

    if shares_prompt(w, stage):
        tp, tc = bp * length, n * t
        prompt = decoder_layer_memory(a, bp, length, 0, b, w.recompute, w.flash, w.dense_mask)
        comp = decoder_layer_memory(a, n, t, length, b, w.recompute, w.flash, w.dense_mask)
        prompt_kv = 2 * tp * dkv * b  # one layer's prompt keys/values
        prefix_rep = 2 * n * length * dkv * b  # the same repeated to the G rows of each prompt
        prompt_kept, comp_kept = pass_kept(prompt, tp, prompt_kv), pass_kept(comp, tc, prefix_rep)
        all_tables = tables(bp, length, length) + tables(n, t, length + t)
        shared = all_tables if w.recompute else 0  # without recompute only casts read them: freed after the forward
        kept = vis["saved"] + prompt_kept + comp_kept + shared
        prompt_kv_grads = layers * prompt_kv  # d(prompt K/V) of every layer, waiting for the prompt pass's backward
        forward_extra = 0 if w.recompute else layers * prefix_rep + all_tables  # alive until the forward ends
        layer_peaks = {
            "peak: completion layer backward": kept + prompt_kv_grads + comp.peak - comp.output,
            "peak: prompt layer backward": vis["saved"] + prompt_kept + shared + prompt_kv_grads + prompt.peak
            - prompt.output,
        }
        passes = {"prompt_pass_kept": prompt_kept, "completion_pass_kept": comp_kept}
        largest_layer = max(comp.peak, prompt.peak)
    else:
        tf = n * (length + t)
        full = decoder_layer_memory(a, n, length + t, 0, b, w.recompute, w.flash, w.dense_mask)
        full_kept = pass_kept(full, tf, 0)
        all_tables = tables(n, length + t, length + t)
        shared = all_tables if w.recompute else 0
        kept = vis["saved"] + full_kept + shared
        forward_extra = 0 if w.recompute else all_tables
        layer_peaks = {"peak: layer backward (plain forward)": kept + full.peak - full.output}
        passes = {"full_pass_kept": full_kept}
        largest_layer = full.peak
    return {
        "vision_kept": vis["saved"],
        **passes,
        "decoder_kept": sum(passes.values()),
        "tables_and_masks_kept": shared,
        "lm_head_kept": head["saved"],
        "largest_layer_peak": largest_layer,
        "peak: forward (LM-head chunk)": kept + head["saved"] + forward_extra + head["forward peak"],
        "peak: LM-head backward": kept + head["saved"] + head["backward peak"],
        **layer_peaks,
        "peak: vision backward": vis["saved"] + vis["backward working set"] + bp * length * h * b,
    }


def activation_bytes(a: Architecture, w: Workload, stage: int = 0) -> int:
    """Peak activation memory of the policy's forward + backward of one micro-batch (bf16 activations by default):
    the largest of the ``peak: ...`` candidates of ``activation_terms``. Recompute on: every decoder layer's inputs
    (both passes) + one layer's full activations during its recompute and backward; off: every layer's saved
    activations. Both: the vision tower's saved activations (never recomputed), the LM head."""
    return max(v for k, v in activation_terms(a, w, stage).items() if k.startswith("peak: "))


# ----------------------------------------------------------------------------------------------------------------
# per-device budget
# ----------------------------------------------------------------------------------------------------------------

STAGES = (0, 1, 2, 3)
PHASES = ("startup", "rollout", "reference pass", "policy backward", "gradient reduce", "save")


@dataclass(frozen=True)
class MemoryBudget:
    """Bytes per device for one model, sharding stage and workload.

    ``weights`` ... ``reference``: persistent (``grads`` as held during the backward); ``activations``: what the
    policy backward adds on top (activations + the sharding wrappers' in-flight buffers). ``phases``: the total of
    every phase of a step; ``total`` is the largest."""

    model: str
    stage: int
    params: int
    weights: float
    master: float
    adam: float
    grads: float
    reference: float
    activations: float
    phases: dict[str, float] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return max(self.phases.values()) if self.phases else (
            self.weights + self.master + self.adam + self.grads + self.reference + self.activations)

    @property
    def peak_phase(self) -> str:
        return max(self.phases, key=self.phases.__getitem__)


def _states(a: Architecture, stage: int, w: Workload) -> dict[str, float]:
    """Persistent bytes per device: weights, master, adam, grads (during the backward), grads_kept (between steps),
    host (sharding_offload), in_flight (sharding buffers during the backward), largest (elements of the largest
    parameter)."""
    b, n = w.dtype_bytes, w.num_gpus
    shapes = parameter_shapes(a)
    total = sum(_numel(s) for _, s in shapes)
    trainable = sum(_numel(s) for name, s in shapes if _trainable(name, w.train_vision))
    largest = max(_numel(s) for _, s in shapes)
    if w.sharding_offload and stage != 3:
        raise ValueError("sharding_offload is stage-3 only: Paddle's stage-1/2 optimizer asserts fp16 parameters "
                         "for offload (group_sharded_optimizer_stage2.py), a bf16 or fp32 policy fails at start-up")
    if stage == 0:
        return {"weights": b * total, "master": 4 * trainable, "adam": 8 * trainable, "grads": b * trainable,
                "grads_kept": 0.0, "host": 0.0, "in_flight": 0.0, "largest": largest}
    if stage in (1, 2):
        owned = max(stage2_rank_elements(a, n, w.train_vision))
        in_flight = (n - 1) * STAGE2_BUCKET * b + largest * b  # other ranks' buckets, one non-owned gradient
        return {"weights": b * total, "master": 4 * owned, "adam": 8 * owned, "grads": b * owned,
                "grads_kept": b * owned, "host": 0.0, "in_flight": in_flight, "largest": largest}
    if stage == 3:
        sp = stage3_split(a, w.train_vision)
        sliced = sp["sliced_trainable"] / n
        whole = sp["unsliced_trainable"]
        first, second = ([*_sliced_sizes(a), 0, 0])[:2]  # (a small model may slice nothing)
        in_flight = (2 * first + second) * b  # a full parameter, its full gradient, the next one
        weights_sliced = b * (sp["sliced_trainable"] + sp["sliced_frozen"]) / n
        weights_whole = b * (whole + sp["whole_frozen"])
        if w.sharding_offload:  # slices, master, moments (and gradient slices, as fp32) in host memory
            host = weights_sliced + 4 * (sliced + whole) + 8 * (sliced + whole) + 4 * sliced
            return {"weights": weights_whole, "master": 0.0, "adam": 0.0, "grads": b * whole, "grads_kept": b * whole,
                    "host": host, "in_flight": in_flight, "largest": largest}
        return {"weights": weights_sliced + weights_whole, "master": 4 * (sliced + whole), "adam": 8 * (sliced + whole),
                "grads": b * (sliced + whole), "grads_kept": b * whole, "host": 0.0, "in_flight": in_flight,
                "largest": largest}
    raise ValueError(f"stage must be one of {STAGES}, got {stage}")


def rollout_bytes(a: Architecture, w: Workload) -> int:
    """Generation of one rank's prompts: the prompt KV cache (once per prompt), the G completions' slots, the fp32
    rotary tables of every decode step, and one prefill layer's no-grad working set (gate, up, their product)."""
    b, layers, dkv = w.dtype_bytes, a.num_layers, a.num_kv_heads * a.head_dim
    tp = w.prompts * w.prompt_tokens
    cache = layers * 2 * dkv * b * (tp + w.sequences * w.completion_tokens)
    tables = 2 * w.sequences * w.completion_tokens * (a.num_heads + a.num_kv_heads) * a.head_dim * 4
    prefill = tp * (3 * a.intermediate_size + 4 * a.hidden_size) * b
    return cache + tables + prefill


def logprob_pass_bytes(a: Architecture, w: Workload) -> int:
    """A no-grad log-prob pass (reference, or old policy): every layer's prompt K/V and their G-row repeats (held by
    ``grpo.logprobs.shared_prefix_hidden`` until the completion pass ends), one layer's working set, the hidden states and one
    LM-head chunk."""
    b, layers, dkv = w.dtype_bytes, a.num_layers, a.num_kv_heads * a.head_dim
    kvs = layers * 2 * dkv * b * (w.prompts + w.sequences) * w.prompt_tokens
    tc = w.sequences * w.completion_tokens
    layer = max(w.prompts * w.prompt_tokens, tc) * (3 * a.intermediate_size + 4 * a.hidden_size) * b
    head = lm_head_memory(a, tc, w.logprob_chunk, b, w.temperature)
    return kvs + layer + tc * a.hidden_size * b + head["forward peak"]


def memory_budget(a: Architecture, stage: int, w: Workload = Workload()) -> MemoryBudget:
    """Per-device bytes of full-parameter GRPO with sharding ``stage`` over ``w.num_gpus``, every phase."""
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage}")
    st = _states(a, stage, w)
    p = count_parameters(a)["total"]
    b = w.dtype_bytes
    ref_full = w.ref_dtype_bytes * p if w.reference else 0.0
    ref_resident = 0.0 if w.ref_offload else ref_full
    optimizer = st["weights"] + st["master"] + st["adam"]
    acts = float(activation_bytes(a, w, stage)) + st["in_flight"]
    between = optimizer + st["grads_kept"] + ref_resident  # what stays between steps
    # Stage 3 gathers each sliced parameter on the device and copies it to the host, one at a time
    # (distributed/sharding.py: get_all_parameters(convert2cpu=True), _allgather_buffer in group_sharded_stage3.py).
    gathered = b * _largest_sliced(a) if stage == 3 else 0.0
    save = (b * linear_weight_numel(a) if w.save_transposes_on_device else 0.0) + gathered
    policy_load = 4 * p + b * st["largest"]  # built in fp32, then cast parameter by parameter
    ref_load = (4 * p + b * st["largest"]) if (w.reference and not w.ref_offload) else 0.0
    phases = {
        "startup": max(policy_load, b * p + ref_load),
        "rollout": between + rollout_bytes(a, w) + (st["in_flight"] if stage == 3 else 0.0),
        "reference pass": between - ref_resident + ref_full + (logprob_pass_bytes(a, w) if w.reference else 0.0),
        "policy backward": optimizer + st["grads"] + ref_resident + acts,
        "gradient reduce": optimizer + st["grads"] + ref_resident
        + (8 * max(ALLREDUCE_BUCKET, st["largest"]) if stage == 0 else 0.0),
        "save": between + save,
    }
    return MemoryBudget(model=a.name, stage=stage, params=p, weights=st["weights"], master=st["master"],
                        adam=st["adam"], grads=st["grads"], reference=ref_resident, activations=acts, phases=phases)


def host_memory(a: Architecture, w: Workload = Workload(), stage: int = 0) -> dict[str, float]:
    """Host RAM per node, bytes: the offloaded reference (steady, and while it loads: ``from_pretrained`` builds it
    in fp32 on the host before the cast, all local ranks at once; audit R4(f)), and stage-3 offload state."""
    p = count_parameters(a)["total"]
    ranks = w.ranks_per_node
    ref = w.ref_dtype_bytes * p if (w.reference and w.ref_offload) else 0.0
    load = (4 * p if w.ref_built_in_fp32 else w.ref_dtype_bytes * p) if ref else 0.0
    offload = _states(a, stage, w)["host"]
    b = w.dtype_bytes
    # save_pretrained on rank 0: every tensor copied to the host (transposed where linear) before the files are
    # written, plus safetensors' numpy copy of one shard (max_shard_bytes = 4 GiB); under stage 3 every rank also
    # holds its gathered copy of each sliced parameter on the host (get_all_parameters(convert2cpu=True)).
    state = b * p
    save = state + min(4 << 30, state)
    if stage == 3:
        sliced = stage3_split(a, w.train_vision)
        save += ranks * b * (sliced["sliced_trainable"] + sliced["sliced_frozen"])
    return {"reference (steady)": ranks * ref, "reference (loading)": ranks * load,
            "sharding offload": ranks * offload, "save": save}


# ----------------------------------------------------------------------------------------------------------------
# tables (docs/distributed.md)
# ----------------------------------------------------------------------------------------------------------------

def _gb(x: float) -> str:
    return f"{x / GB:.1f}"


def budget_table(models: tuple[Architecture, ...] = (QWEN2_5_VL_3B, QWEN2_5_VL_7B), w: Workload = Workload(),
                 capacity_gb: float = 80.0) -> str:
    """Markdown table, GB per device, for every model x stage, reference on the GPU and offloaded ("CPU"). The
    columns up to "policy backward" add up to that phase; "total" is the largest phase (named); the last column is
    what remains of ``capacity_gb`` (negative: does not fit)."""
    cols = ["model (params)", "stage", "reference", "weights bf16", "fp32 master", "Adam m+v", "grads bf16",
            "reference bf16", "activations", "policy backward", "total (phase)", f"left of {capacity_gb:.0f} GB"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for a in models:
        for offload in (False, True):
            for stage in STAGES:
                bud = memory_budget(a, stage, dataclasses.replace(w, ref_offload=offload))
                parts = [bud.weights, bud.master, bud.adam, bud.grads, bud.reference, bud.activations,
                         bud.phases["policy backward"]]
                left = capacity_gb - bud.total / GB
                lines.append(f"| {a.name} ({bud.params / 1e9:.2f} B) | {stage} | {'CPU' if offload else 'GPU'} | "
                             + " | ".join(_gb(x) for x in parts) + f" | {_gb(bud.total)} ({bud.peak_phase})"
                             + (f" | {left:.1f} |" if left >= 0 else f" | **does not fit** ({left:.1f}) |"))
    return "\n".join(lines)


def phase_table(models: tuple[Architecture, ...] = (QWEN2_5_VL_3B, QWEN2_5_VL_7B), w: Workload = Workload()) -> str:
    """Markdown table, GB per device: the total of every phase, reference on the GPU / offloaded."""
    cols = ["model", "stage", "reference", *PHASES]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for a in models:
        for offload in (False, True):
            for stage in STAGES:
                bud = memory_budget(a, stage, dataclasses.replace(w, ref_offload=offload))
                lines.append(f"| {a.name} | {stage} | {'CPU' if offload else 'GPU'} | "
                             + " | ".join(_gb(bud.phases[ph]) for ph in PHASES) + " |")
    return "\n".join(lines)


ACTIVATION_VARIANTS = (  # (recompute, flash, image tokens or None for the workload's, shared prompt)
    (True, True, None, True), (True, False, None, True), (False, True, None, True), (False, False, None, True),
    (True, True, 400, True), (True, True, None, False))


def activation_table(models: tuple[Architecture, ...] = (QWEN2_5_VL_3B, QWEN2_5_VL_7B), w: Workload = Workload()
                     ) -> str:
    """Markdown table, GB: the activation terms with recompute on/off, flash/math attention, a COCO-sized image
    (~400 image tokens) next to the workload's largest, and the plain forward that stages 1/2 use under recompute."""
    cols = ["model", "recompute", "attention", "image tokens", "gradient pass", "vision kept", "decoder kept",
            "LM-head backward peak", "largest layer peak", "activations (peak)", "largest at"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for a in models:
        for rc, fl, img, shared in ACTIVATION_VARIANTS:
            wl = dataclasses.replace(w, recompute=rc, flash=fl, image_tokens=img or w.image_tokens,
                                     shared_prefix=shared)
            t = activation_terms(a, wl)
            head = lm_head_memory(a, wl.sequences * wl.completion_tokens, wl.logprob_chunk, wl.dtype_bytes,
                                  wl.temperature)
            peaks = {k: v for k, v in t.items() if k.startswith("peak: ")}
            at = max(peaks, key=peaks.__getitem__)[len("peak: "):]
            vals = [t["vision_kept"], t["decoder_kept"], head["backward peak"], t["largest_layer_peak"],
                    max(peaks.values())]
            lines.append(f"| {a.name} | {'on' if rc else 'off'} | {'flash' if fl else 'math'} | {wl.image_tokens} | "
                         f"{'shared prompt' if shared else 'plain (stages 1/2)'} | "
                         + " | ".join(_gb(x) for x in vals) + f" | {at} |")
    return "\n".join(lines)


def layer_table(models: tuple[Architecture, ...] = (QWEN2_5_VL_3B, QWEN2_5_VL_7B),
                tokens: tuple[int, ...] = (1024, 4096)) -> str:
    """Markdown table, MB (1e6 bytes): ``decoder_layer_peak_bytes`` for one sequence, bf16, dense mask."""
    cols = ["model", "tokens", "flash", "flash + recompute", "math", "score matrix (one)", "peak step (flash)"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for a in models:
        for t in tokens:
            vals = [decoder_layer_peak_bytes(a, t), decoder_layer_peak_bytes(a, t, recompute=True),
                    decoder_layer_peak_bytes(a, t, flash=False), attention_score_bytes(1, t, t, a.num_heads)]
            step = decoder_layer_memory(a, 1, t).peak_step
            lines.append(f"| {a.name} | {t} | " + " | ".join(f"{x / 1e6:.0f}" for x in vals) + f" | {step} |")
    return "\n".join(lines)


def host_table(models: tuple[Architecture, ...] = (QWEN2_5_VL_3B, QWEN2_5_VL_7B), w: Workload = Workload()) -> str:
    """Markdown table, GB of host RAM per node (``w.ranks_per_node`` ranks)."""
    cols = ["model", "ref_model_offload: steady", "ref_model_offload: while loading (built in fp32)",
            "same, loaded in bf16", "stage 3 + sharding_offload", "save, stages 0-2", "save, stage 3"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for a in models:
        off = dataclasses.replace(w, ref_offload=True)
        cur = host_memory(a, off)
        bf16 = host_memory(a, dataclasses.replace(off, ref_built_in_fp32=False))
        sh = host_memory(a, dataclasses.replace(w, sharding_offload=True), stage=3)
        lines.append(f"| {a.name} | {_gb(cur['reference (steady)'])} | {_gb(cur['reference (loading)'])} | "
                     f"{_gb(bf16['reference (loading)'])} | {_gb(sh['sharding offload'])} | "
                     f"{_gb(host_memory(a, w, 0)['save'])} | {_gb(host_memory(a, w, 3)['save'])} |")
    return "\n".join(lines)


def offload_table(models: tuple[Architecture, ...] = (QWEN2_5_VL_3B, QWEN2_5_VL_7B), w: Workload = Workload(),
                  capacity_gb: float = 80.0) -> str:
    """Markdown table, GB per device: stage 3 with ``sharding_offload`` (reference on the GPU / offloaded)."""
    cols = ["model", "reference", "weights on GPU", "grads", "activations", "policy backward", "total (phase)",
            f"left of {capacity_gb:.0f} GB"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for a in models:
        for ref_off in (False, True):
            bud = memory_budget(a, 3, dataclasses.replace(w, sharding_offload=True, ref_offload=ref_off))
            lines.append(f"| {a.name} | {'CPU' if ref_off else 'GPU'} | {_gb(bud.weights)} | {_gb(bud.grads)} | "
                         f"{_gb(bud.activations)} | {_gb(bud.phases['policy backward'])} | "
                         f"{_gb(bud.total)} ({bud.peak_phase}) | {capacity_gb - bud.total / GB:.1f} |")
    return "\n".join(lines)


def removed_table(models: tuple[Architecture, ...] = (QWEN2_5_VL_3B, QWEN2_5_VL_7B), w: Workload = Workload()
                  ) -> str:
    """Markdown table, GB per device: what the audited code held that the fixed code does not (not in the budget)."""
    cols = ["model", "B10: activations without recompute, minus with", "B12: fp32 copies of all gradients",
            "R4(d): linear weights transposed on the device at save", "R4(e): packed rollout weights"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for a in models:
        no_rc = activation_bytes(a, dataclasses.replace(w, recompute=False)) - activation_bytes(a, w)
        trainable = sum(_numel(s) for n, s in parameter_shapes(a) if _trainable(n, w.train_vision))
        vals = [no_rc, 4 * trainable, w.dtype_bytes * linear_weight_numel(a), packed_projection_bytes(a, w.dtype_bytes)]
        lines.append(f"| {a.name} | " + " | ".join(_gb(x) for x in vals) + " |")
    return "\n".join(lines)


def doc_tables() -> dict[str, str]:
    """Every table docs/distributed.md carries, by name (the tests check each is in the docs verbatim)."""
    return {"budget": budget_table(), "phases": phase_table(), "activations": activation_table(),
            "layer": layer_table(), "offload": offload_table(), "host": host_table(), "removed": removed_table(),
            "unverified": "\n".join(f"- {item}" for item in UNVERIFIED)}


DOC_MARKER = "<!-- memory.py: {} -->"


def update_doc(text: str) -> str:
    """``text`` with the block after every ``<!-- memory.py: NAME -->`` line (up to the next blank line) replaced
    by the current table NAME. Raises if a table has no marker (nothing is skipped silently)."""
    lines = text.split("\n")
    for name, table in doc_tables().items():
        marker = DOC_MARKER.format(name)
        if marker not in lines:
            raise ValueError(f"no line {marker!r} in the document")
        i = lines.index(marker) + 1
        j = i
        while j < len(lines) and lines[j].strip():
            j += 1
        lines[i:j] = table.split("\n")
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] == ["--update-doc"] and len(sys.argv) == 3:
        with open(sys.argv[2], encoding="utf-8") as f:
            doc = f.read()
        with open(sys.argv[2], "w", encoding="utf-8") as f:
            f.write(update_doc(doc))
    elif len(sys.argv) == 1:
        for name, table in doc_tables().items():
            print(DOC_MARKER.format(name))
            print(table)
            print()
    else:
        sys.exit("usage: python -m paddlemix_r1.distributed.memory [--update-doc docs/distributed.md]")
