"""GPU memory budget of full-parameter GRPO per device, from parameter counts.

The table in docs/distributed.md is printed by ``python -m paddlemix_r1.distributed.memory``;
tests check the arithmetic (and ``count_parameters`` against the real model classes).

Per device, for P parameters, N data-parallel ranks and sharding stage s (ZeRO numbering):

    policy weights  bf16          2 P        (stage 3: / N)
    master weights  fp32          4 P        (stage >= 1: / N)
    Adam moments    fp32 m and v  8 P        (stage >= 1: / N)
    gradients       bf16          2 P        (stage >= 2: / N)
    reference model bf16          2 P        (0 when offloaded to host memory between its passes)
    activations     see ``activation_bytes``

Gradients are counted in the parameters' dtype, as Paddle keeps them; the optimizer casts them
to fp32 piecewise. Allocator fragmentation and the CUDA context (~1 GB) are not included: keep
the total well under the device's capacity.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

GB = 1e9  # decimal gigabytes, as GPU capacities are quoted (an "80 GB" A100/H100 holds 85.9e9 bytes)


@dataclass(frozen=True)
class Architecture:
    """The config.json numbers a parameter count needs."""

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
                   spatial_merge_size=v.spatial_merge_size)


# Published config.json values of Qwen/Qwen2.5-VL-3B-Instruct and Qwen/Qwen2.5-VL-7B-Instruct.
QWEN2_5_VL_3B = Architecture(
    name="Qwen2.5-VL-3B", family="qwen2_5_vl", vocab_size=151936, hidden_size=2048, intermediate_size=11008,
    num_layers=36, num_heads=16, num_kv_heads=2, tie_word_embeddings=True, vision_depth=32, vision_dim=1280,
    vision_intermediate=3420, vision_out=2048)
QWEN2_5_VL_7B = Architecture(
    name="Qwen2.5-VL-7B", family="qwen2_5_vl", vocab_size=152064, hidden_size=3584, intermediate_size=18944,
    num_layers=28, num_heads=28, num_kv_heads=4, tie_word_embeddings=False, vision_depth=32, vision_dim=1280,
    vision_intermediate=3420, vision_out=3584)


def count_parameters(a: Architecture) -> dict[str, int]:
    """Parameters of our model classes by part: {"vision", "decoder", "lm_head", "total"}."""
    h, kv = a.hidden_size, a.num_kv_heads * (a.hidden_size // a.num_heads)
    attn = (h * h + h) + 2 * (h * kv + kv) + h * h  # q (bias), k and v (bias), o (no bias)
    layer = attn + 3 * h * a.intermediate_size + 2 * h  # + SwiGLU MLP without bias + 2 RMSNorms
    decoder = a.vocab_size * h + a.num_layers * layer + h  # embeddings, layers, final norm
    lm_head = 0 if a.tie_word_embeddings else a.vocab_size * h

    e, vi = a.vision_dim, a.vision_intermediate
    patch = e * a.in_channels * a.temporal_patch_size * a.patch_size**2  # Conv3d without bias
    vattn = (e * 3 * e + 3 * e) + (e * e + e)  # qkv and proj, both with bias
    if a.family == "qwen2_5_vl":
        vblock = vattn + (3 * e * vi + 2 * vi + e) + 2 * e  # gated MLP with bias, 2 RMSNorms
        merger_norm = e
    elif a.family == "qwen2_vl":
        vblock = vattn + (e * vi + vi + vi * e + e) + 4 * e  # fc1/fc2 with bias, 2 LayerNorms
        merger_norm = 2 * e
    else:
        raise ValueError(f"unknown family {a.family!r}")
    m = e * a.spatial_merge_size**2
    merger = merger_norm + (m * m + m) + (m * a.vision_out + a.vision_out)
    vision = patch + a.vision_depth * vblock + merger
    return {"vision": vision, "decoder": decoder, "lm_head": lm_head, "total": vision + decoder + lm_head}


@dataclass(frozen=True)
class Workload:
    """What one rank holds during the policy's backward pass (one micro-batch).

    Defaults: the REC recipe (configs/rec_qwen2_5_vl_3b.yaml) on 8 GPUs: one prompt per rank,
    G = 8 completions, prompts up to 1024 tokens (image tokens included), completions up to 256.
    """

    num_gpus: int = 8
    sequences: int = 8
    prompt_tokens: int = 1024
    completion_tokens: int = 256
    logprob_chunk: int = 512
    recompute: bool = True
    ref_offload: bool = False


def activation_bytes(a: Architecture, w: Workload) -> int:
    """Estimate of activation memory in the policy's backward, bf16 activations, flash attention.

    - recompute (gradient checkpointing per decoder layer): the input of every layer is kept,
      ``tokens * h * 2`` bytes per layer, plus one layer's working set while it is recomputed
      and back-propagated;
    - without recompute: every layer's working set is kept.
    A layer's working set is taken as ``tokens * (16 h + 4 I) * 2`` bytes: the attention block's
    normed input, q/k/v, attention output, projection and residual with their gradients (about
    16 h), and the MLP's gate, up, activation and product (about 4 I). The vision tower runs once
    per prompt on a few hundred patches and is small next to this.
    - the chunked LM head: fp32 logits, probabilities and their gradient for one chunk of
      ``logprob_chunk`` rows (``3 * chunk * V * 4``) plus the fp32 hidden states of the completion
      positions (``sequences * completion_tokens * h * 4``).
    """
    tokens = w.sequences * (w.prompt_tokens + w.completion_tokens)
    h, inter = a.hidden_size, a.intermediate_size
    working = tokens * (16 * h + 4 * inter) * 2
    layers = tokens * h * 2 * a.num_layers + working if w.recompute else working * a.num_layers
    head = 3 * w.logprob_chunk * a.vocab_size * 4 + w.sequences * w.completion_tokens * h * 4
    return layers + head


STAGES = (0, 1, 2, 3)


@dataclass(frozen=True)
class MemoryBudget:
    """Bytes per device by component for one model, sharding stage and workload."""

    model: str
    stage: int
    params: int
    weights: float
    master: float
    adam: float
    grads: float
    reference: float
    activations: float

    @property
    def total(self) -> float:
        return self.weights + self.master + self.adam + self.grads + self.reference + self.activations


def memory_budget(a: Architecture, stage: int, w: Workload = Workload()) -> MemoryBudget:
    """Per-device bytes of full-parameter GRPO with ZeRO-style sharding ``stage`` over ``w.num_gpus``."""
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage}")
    p = count_parameters(a)["total"]
    n = w.num_gpus
    return MemoryBudget(
        model=a.name, stage=stage, params=p,
        weights=2 * p / (n if stage >= 3 else 1),
        master=4 * p / (n if stage >= 1 else 1),
        adam=8 * p / (n if stage >= 1 else 1),
        grads=2 * p / (n if stage >= 2 else 1),
        reference=0.0 if w.ref_offload else 2 * p,
        activations=float(activation_bytes(a, w)),
    )


def budget_table(models: tuple[Architecture, ...] = (QWEN2_5_VL_3B, QWEN2_5_VL_7B), w: Workload = Workload(),
                 capacity_gb: float = 80.0) -> str:
    """Markdown table, GB per device, for every model x stage, reference on the GPU and offloaded;
    the last column is what remains of ``capacity_gb`` (negative: does not fit)."""
    cols = ["model (params)", "stage", "reference", "weights bf16", "fp32 master", "Adam m+v", "grads bf16",
            "reference bf16", "activations", "total", f"left of {capacity_gb:.0f} GB"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for a in models:
        for offload in (False, True):
            for stage in STAGES:
                b = memory_budget(a, stage, dataclasses.replace(w, ref_offload=offload))
                parts = [b.weights, b.master, b.adam, b.grads, b.reference, b.activations, b.total]
                left = capacity_gb - b.total / GB
                lines.append(f"| {a.name} ({b.params / 1e9:.2f} B) | {stage} | {'CPU' if offload else 'GPU'} | "
                             + " | ".join(f"{x / GB:.1f}" for x in parts)
                             + (f" | {left:.1f} |" if left >= 0 else f" | **does not fit** ({left:.1f}) |"))
    return "\n".join(lines)


if __name__ == "__main__":
    print(budget_table())
