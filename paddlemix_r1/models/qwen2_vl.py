"""Qwen2-VL: ViT with LayerNorm blocks and a QuickGELU MLP, 2-D rotary, PatchMerger; Qwen2 decoder."""

from __future__ import annotations

import numpy as np
import paddle
import paddle.nn as nn

from paddlemix_r1 import ops
from paddlemix_r1.models.config import VisionConfig
from paddlemix_r1.models.decoder import Linear, VLModelBase
from paddlemix_r1.models.vision_common import (
    LayerNorm,
    Merger,
    PatchEmbed,
    VisionAttention,
    frame_cu_seqlens,
    vision_hw_ids,
    vision_rotary_tables,
)


class VisionMlp(nn.Layer):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.fc1 = Linear(cfg.embed_dim, cfg.intermediate_size)
        self.fc2 = Linear(cfg.intermediate_size, cfg.embed_dim)
        self.act = ops.ACTIVATIONS[cfg.hidden_act]

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class VisionBlock(nn.Layer):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.norm1 = LayerNorm(cfg.embed_dim)
        self.norm2 = LayerNorm(cfg.embed_dim)
        self.attn = VisionAttention(cfg)
        self.mlp = VisionMlp(cfg)

    def forward(self, x, cos, sin, cu_seqlens):
        x = x + self.attn(self.norm1(x), cos, sin, cu_seqlens)
        return x + self.mlp(self.norm2(x))


class Qwen2VisionTransformer(nn.Layer):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.cfg = cfg
        self.patch_embed = PatchEmbed(cfg)
        self.blocks = nn.LayerList([VisionBlock(cfg) for _ in range(cfg.depth)])
        self.merger = Merger(cfg, LayerNorm(cfg.embed_dim))
        self.register_buffer("inv_freq", ops.inv_freq(cfg.head_dim // 2, cfg.rope_theta), persistable=False)

    def forward(self, pixel_values: paddle.Tensor, grid_thw: np.ndarray) -> paddle.Tensor:
        """pixel_values (N, C*T*P*P), grid_thw (n, 3) host array -> merged tokens (N / merge^2, out_hidden)."""
        x = self.patch_embed(pixel_values)  # (N, E)
        hw = vision_hw_ids(grid_thw, self.cfg.spatial_merge_size)  # (N, 2)
        cos, sin = vision_rotary_tables(hw, self.inv_freq, self.cfg.num_heads)  # (1, N, 2 nh, hd)
        cu = frame_cu_seqlens(grid_thw)
        for blk in self.blocks:
            x = blk(x, cos, sin, cu)
        return self.merger(x)


class Qwen2VLForConditionalGeneration(VLModelBase):
    vision_cls = Qwen2VisionTransformer
