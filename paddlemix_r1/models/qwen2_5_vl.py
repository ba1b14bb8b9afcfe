"""Qwen2.5-VL: ViT with RMSNorm blocks, gated SiLU MLP and window attention (full attention in
``fullatt_block_indexes``), RMSNorm merger; Qwen2 decoder (shared)."""

from __future__ import annotations

import numpy as np
import paddle
import paddle.nn as nn

from paddlemix_r1 import ops
from paddlemix_r1.models.config import VisionConfig
from paddlemix_r1.models.decoder import MLP, RMSNorm, VLModelBase
from paddlemix_r1.models.vision_common import (
    Merger,
    PatchEmbed,
    VisionAttention,
    frame_cu_seqlens,
    vision_hw_ids,
    vision_rotary_tables,
)


class GatedVisionMlp(MLP):
    def __init__(self, cfg: VisionConfig):
        super().__init__(cfg.embed_dim, cfg.intermediate_size, bias=True)
        if cfg.hidden_act != "silu":
            raise ValueError(f"Qwen2.5-VL vision MLP supports hidden_act 'silu', got {cfg.hidden_act!r}")


class VisionBlock(nn.Layer):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.norm1 = RMSNorm(cfg.embed_dim, 1e-6)
        self.norm2 = RMSNorm(cfg.embed_dim, 1e-6)
        self.attn = VisionAttention(cfg)
        self.mlp = GatedVisionMlp(cfg)

    def forward(self, x, cos, sin, cu_seqlens):
        x = x + self.attn(self.norm1(x), cos, sin, cu_seqlens)
        return x + self.mlp(self.norm2(x))


def window_index(grid_thw: np.ndarray, merge: int, window_size: int, patch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Order of merged tokens grouped by window, and window boundaries in patches.

    Returns window_index (N / merge^2,) — merged-token ids in window order — and cu_window_seqlens
    (n_windows + 1,) in un-merged patches, empty windows dropped (HF's unique_consecutive).
    """
    win = window_size // merge // patch_size  # window side in merged tokens
    unit = merge * merge
    order, cu, base = [], [0], 0
    for t, h, w in np.asarray(grid_thw, dtype=np.int64).reshape(-1, 3):
        gh, gw = h // merge, w // merge
        idx = np.arange(t * gh * gw).reshape(t, gh, gw)
        ph, pw = (win - gh % win) % win, (win - gw % win) % win
        padded = np.pad(idx, ((0, 0), (0, ph), (0, pw)), constant_values=-1)
        nh, nw = (gh + ph) // win, (gw + pw) // win
        blocks = padded.reshape(t, nh, win, nw, win).transpose(0, 1, 3, 2, 4).reshape(t, nh * nw, win * win)
        counts = (blocks >= 0).sum(-1).reshape(-1)  # tokens per window
        flat = blocks.reshape(-1)
        order.append(flat[flat >= 0] + base)
        cu.extend((np.cumsum(counts) * unit + cu[-1]).tolist())
        base += t * gh * gw
    cu_arr = np.asarray(cu, dtype=np.int64)
    keep = np.concatenate([[True], np.diff(cu_arr) != 0])
    return np.concatenate(order), cu_arr[keep]


class Qwen2_5_VisionTransformer(nn.Layer):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.cfg = cfg
        self.patch_embed = PatchEmbed(cfg)
        self.blocks = nn.LayerList([VisionBlock(cfg) for _ in range(cfg.depth)])
        self.merger = Merger(cfg, RMSNorm(cfg.embed_dim, 1e-6))
        self.register_buffer("inv_freq", ops.inv_freq(cfg.head_dim // 2, cfg.rope_theta), persistable=False)

    def forward(self, pixel_values: paddle.Tensor, grid_thw: np.ndarray) -> paddle.Tensor:
        """pixel_values (N, C*T*P*P), grid_thw (n, 3) host array -> merged tokens (N / merge^2, out_hidden)."""
        cfg = self.cfg
        unit = cfg.spatial_merge_size**2
        win_idx, cu_win = window_index(grid_thw, cfg.spatial_merge_size, cfg.window_size, cfg.patch_size)
        # Patch order inside each window: every merged token carries its merge x merge patches along.
        patch_order = paddle.to_tensor((win_idx[:, None] * unit + np.arange(unit)[None]).reshape(-1))  # (N,)
        x = paddle.gather(self.patch_embed(pixel_values), patch_order)  # (N, E) in window order
        hw = vision_hw_ids(grid_thw, cfg.spatial_merge_size)[patch_order.numpy()]  # (N, 2)
        cos, sin = vision_rotary_tables(hw, self.inv_freq, cfg.num_heads)  # (1, N, 2 nh, hd)
        cu_full = frame_cu_seqlens(grid_thw)
        for i, blk in enumerate(self.blocks):
            x = blk(x, cos, sin, cu_full if i in cfg.fullatt_block_indexes else cu_win)
        merged = self.merger(x)  # (N / unit, out_hidden), window order
        restore = paddle.to_tensor(np.argsort(win_idx, kind="stable"))
        return paddle.gather(merged, restore)


class Qwen2_5_VLForConditionalGeneration(VLModelBase):
    vision_cls = Qwen2_5_VisionTransformer
