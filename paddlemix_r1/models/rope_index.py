"""M-RoPE position ids (3 x L: temporal, height, width), vectorized over the whole batch.

Text tokens advance all three axes together by one. The tokens of one image/video take
``start + (t * interval, h, w)`` over its merged grid, and the text after it starts
``max(grid_h, grid_w) / merge`` later (transformers' rule). Padding (attention_mask 0) is skipped
and gets position 0. Used by the forward pass, the rollout and every log-prob pass, so all three
see the same ids.
"""

from __future__ import annotations

import numpy as np


def get_rope_index(
    input_ids: np.ndarray,
    attention_mask: np.ndarray | None,
    image_grid_thw: np.ndarray | None,
    video_grid_thw: np.ndarray | None,
    *,
    image_token_id: int,
    video_token_id: int,
    spatial_merge_size: int,
    second_per_grid_ts: np.ndarray | None = None,
    tokens_per_second: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Return position_ids (3, B, L) int64 and rope_deltas (B,) int64.

    input_ids, attention_mask: (B, L). image_grid_thw / video_grid_thw: (n, 3), in order of
    appearance over the flattened batch. With ``tokens_per_second`` (Qwen2.5-VL) a video's temporal
    ids step by ``second_per_grid_ts * tokens_per_second`` (seconds default to 1); without it
    (Qwen2-VL) they step by 1.
    rope_deltas = max position + 1 - number of real tokens: decode step t (0-based, after the
    prompt) of a row uses position ``prompt_real_len + t + delta`` on all three axes.
    """
    input_ids = np.asarray(input_ids)
    b, length = input_ids.shape
    valid = np.ones((b, length), bool) if attention_mask is None else np.asarray(attention_mask).astype(bool)

    # Per token: the vision item it belongs to (-1 for text) and its offset inside that item.
    item_of = np.full((b, length), -1, dtype=np.int64)
    offset = np.zeros((b, length), dtype=np.int64)
    grids, intervals = [], []
    for kind, token_id, thw in (("image", image_token_id, image_grid_thw), ("video", video_token_id, video_grid_thw)):
        is_tok = (input_ids == token_id) & valid  # (B, L)
        n_tok = int(is_tok.sum())
        thw = np.zeros((0, 3), np.int64) if thw is None else np.asarray(thw, dtype=np.int64).reshape(-1, 3)
        per_item = thw[:, 0] * (thw[:, 1] // spatial_merge_size) * (thw[:, 2] // spatial_merge_size)  # (n,)
        if n_tok != int(per_item.sum()):
            raise ValueError(
                f"{kind} tokens and {kind} grids do not match: {n_tok} <|{kind}_pad|> tokens in input_ids, "
                f"{int(per_item.sum())} expected from {kind}_grid_thw {thw.tolist()}"
            )
        if kind == "video" and tokens_per_second is not None:
            secs = np.ones(len(thw)) if second_per_grid_ts is None else np.asarray(second_per_grid_ts, np.float64)
            step = secs.reshape(-1) * tokens_per_second  # Qwen2.5-VL: 1 s per grid step unless told
        else:
            step = np.ones(len(thw), dtype=np.float64)
        if n_tok:
            k = np.cumsum(is_tok.reshape(-1)).reshape(b, length) - 1  # running index over this kind's tokens
            starts = np.concatenate([[0], np.cumsum(per_item)[:-1]])  # (n,)
            item = np.searchsorted(np.cumsum(per_item), k, side="right")  # (B, L)
            item = np.minimum(item, len(thw) - 1)
            item_of = np.where(is_tok, item + len(grids), item_of)
            offset = np.where(is_tok, k - starts[item], offset)
        grids.extend(thw.tolist())
        intervals.extend(step.tolist())

    grids_a = np.asarray(grids, dtype=np.int64).reshape(-1, 3)
    hm = grids_a[:, 1] // spatial_merge_size  # (n_items,)
    wm = grids_a[:, 2] // spatial_merge_size
    interval = np.asarray(intervals, dtype=np.float64)
    is_vis = item_of >= 0
    safe_item = np.where(is_vis, item_of, 0)

    # How far each token moves the running position: text 1; the last token of an item max(h, w).
    n_item_tokens = grids_a[:, 0] * hm * wm if len(grids_a) else np.zeros(0, np.int64)
    last_of_item = is_vis & (offset == (n_item_tokens[safe_item] - 1 if len(grids_a) else 0))
    advance = np.where(valid & ~is_vis, 1, 0) + np.where(last_of_item, np.maximum(hm, wm)[safe_item] if len(grids_a) else 0, 0)
    start = np.cumsum(advance, axis=1) - advance  # (B, L) exclusive running position

    pos = np.broadcast_to(start, (3, b, length)).copy()  # (3, B, L)
    if is_vis.any():
        o = offset
        area = (hm * wm)[safe_item]
        t_idx = o // np.maximum(area, 1)
        h_idx = (o // np.maximum(wm[safe_item], 1)) % np.maximum(hm[safe_item], 1)
        w_idx = o % np.maximum(wm[safe_item], 1)
        t_pos = (t_idx * interval[safe_item]).astype(np.int64)  # truncation, as HF's .long()
        pos[0] = np.where(is_vis, start + t_pos, pos[0])
        pos[1] = np.where(is_vis, start + h_idx, pos[1])
        pos[2] = np.where(is_vis, start + w_idx, pos[2])
    pos = np.where(valid[None], pos, 0)
    max_pos = np.where(valid[None], pos, -1).max(axis=(0, 2))  # (B,)
    deltas = max_pos + 1 - valid.sum(axis=1)
    return pos.astype(np.int64), deltas.astype(np.int64)
