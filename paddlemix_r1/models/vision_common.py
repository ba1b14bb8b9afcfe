"""Pieces both vision towers share: patch embedding, 2-D rotary ids, vision attention."""

from __future__ import annotations

import numpy as np
import paddle
import paddle.nn as nn

from paddlemix_r1 import ops
from paddlemix_r1.models.config import VisionConfig
from paddlemix_r1.models.decoder import Linear


class PatchProjection(nn.Layer):
    """Conv3d with stride == kernel over flattened (C, T, P, P) patches, as one matmul. ``weight`` keeps the
    checkpoint's Conv3d shape (E, C, T, P, P). A layer of its own, called in the forward, so that hooks on
    the layer that owns a parameter see every use of it (stage-3 sharding gathers a parameter only inside
    its owner's forward)."""

    def __init__(self, shape: list[int]):
        super().__init__()
        self.weight = self.create_parameter(shape)

    def forward(self, pixel_values: paddle.Tensor) -> paddle.Tensor:
        w = self.weight.reshape([self.weight.shape[0], -1])  # (E, C*T*P*P)
        return paddle.matmul(pixel_values, w, transpose_y=True)  # (N, E)


class PatchEmbed(nn.Layer):
    """Patches (N, C*T*P*P) -> embeddings (N, E); the parameter is ``proj.weight`` as in the checkpoint."""

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.proj = PatchProjection([cfg.embed_dim, cfg.in_channels, cfg.temporal_patch_size, cfg.patch_size,
                                     cfg.patch_size])

    def forward(self, pixel_values: paddle.Tensor) -> paddle.Tensor:
        return self.proj(pixel_values)  # (N, E)


def vision_rotary_tables(hw: np.ndarray, inv_freq: paddle.Tensor, num_heads: int) -> tuple[paddle.Tensor, paddle.Tensor]:
    """Rotary tables for (N, 2) patch coordinates, expanded once for q and k of every block: (1, N, 2 nh, hd)."""
    cos, sin = ops.vision_cos_sin(paddle.to_tensor(hw), inv_freq)  # (N, hd)
    return ops.expand_tables(cos.unsqueeze(0), sin.unsqueeze(0), 2 * num_heads)


def vision_hw_ids(grid_thw: np.ndarray, merge: int) -> np.ndarray:
    """(h, w) patch coordinates (N, 2) in the processor's patch order (merge x merge blocks, row-major)."""
    out = []
    for t, h, w in np.asarray(grid_thw, dtype=np.int64).reshape(-1, 3):
        hh, ww = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")  # (h, w)
        block = (h // merge, merge, w // merge, merge)
        hh = hh.reshape(block).transpose(0, 2, 1, 3).reshape(-1)
        ww = ww.reshape(block).transpose(0, 2, 1, 3).reshape(-1)
        out.append(np.tile(np.stack([hh, ww], axis=-1), (t, 1)))
    return np.concatenate(out, axis=0)


def frame_cu_seqlens(grid_thw: np.ndarray) -> np.ndarray:
    """Segment boundaries: every frame of every image/video attends within itself."""
    g = np.asarray(grid_thw, dtype=np.int64).reshape(-1, 3)
    lens = np.repeat(g[:, 1] * g[:, 2], g[:, 0])
    return np.concatenate([[0], np.cumsum(lens)])


class VisionAttention(nn.Layer):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.nh, self.hd = cfg.num_heads, cfg.head_dim
        self.qkv = Linear(cfg.embed_dim, 3 * cfg.embed_dim)
        self.proj = Linear(cfg.embed_dim, cfg.embed_dim)
        self.scale = self.hd**-0.5

    def forward(self, x, cos, sin, cu_seqlens: np.ndarray):
        n = x.shape[0]
        qkv = self.qkv(x).reshape([n, 3, self.nh, self.hd])  # (N, 3, nh, hd)
        out = ops.vision_attention(qkv, cos, sin, cu_seqlens, self.scale)  # tables (1, N, 2 nh, hd) -> (N, nh, hd)
        return self.proj(out.reshape([n, self.nh * self.hd]))


class Merger(nn.Layer):
    """Norm, then merge each merge x merge block of patches into one token for the decoder."""

    def __init__(self, cfg: VisionConfig, norm: nn.Layer):
        super().__init__()
        self.ln_q = norm
        self.hidden = cfg.embed_dim * cfg.spatial_merge_size**2
        self.mlp = nn.Sequential(Linear(self.hidden, self.hidden), nn.GELU(), Linear(self.hidden, cfg.out_hidden_size))

    def forward(self, x):
        return self.mlp(self.ln_q(x).reshape([-1, self.hidden]))  # (N / merge^2, out_hidden)


class LayerNorm(nn.Layer):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = self.create_parameter([dim], default_initializer=nn.initializer.Constant(1.0))
        self.bias = self.create_parameter([dim], is_bias=True)
        self.eps = eps

    def forward(self, x):
        return ops.layer_norm(x, self.weight, self.bias, self.eps)
