"""Online GRPO over focus trajectories: ``paddlemix-r1 visrl-online --config C``.

``FocusGRPOTrainer`` is the GRPO trainer with one method replaced, ``rollout``: each prompt gets G
two-turn trajectories (``focus.trajectory.rollout_trajectories``), scored by the config's rewards over
the trajectories (``focus.task``: answer correctness, optionally box validity and crop relevance; an
unusable box scores 0). Advantages are per group of G trajectories and multiply the tokens of BOTH
turns: the rollout hands the trainer both turns as one log-prob batch in blocks of G
(``trajectory.merge_turns``: turn 1 of prompt i, then turn 2 of prompt i), each block carrying its
trajectories' rewards, so the trainer's per-group advantages, reference / old log-probs and loss run
unchanged. The inserted user turn and the crop's image tokens sit in turn 2's prompt and are never
loss tokens. Use a token-level loss (``loss_type: dapo`` or ``bnpo``): with ``grpo`` each turn is
averaged as its own sequence and a trajectory without a turn 2 adds an empty row to the mean.

Reported per step, as the trainer reports them: ``reward`` (the trajectory reward), ``completion_length``
(per turn), and ``rewards/<name>/mean``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import paddle

from paddlemix_r1.focus import config as config_io
from paddlemix_r1.focus import task as _task  # noqa: F401  (registers the focus_vqa task and rewards)
from paddlemix_r1.focus.boxes import MIN_CROP_SIDE, image_size_of
from paddlemix_r1.focus.trajectory import Trajectories, merge_turns, rollout_trajectories
from paddlemix_r1.grpo.config import GRPOConfig
from paddlemix_r1.grpo.records import Rollout
from paddlemix_r1.grpo.trainer import GRPOTrainer
from paddlemix_r1.tasks import reward_columns


@dataclass
class FocusOptions:
    """The ``focus:`` section of an online recipe."""

    max_box_tokens: int = 48
    """Turn 1's budget (GRPOConfig.max_completion_length is turn 2's)."""
    layout: str = "visrl"
    min_crop_side: int = MIN_CROP_SIDE
    data_files: list[str] | None = None
    """Visual-CoT files to train on (``focus.selfgen.read_viscot``)."""
    image_root: str = ""
    max_items: int | None = None


class FocusGRPOTrainer(GRPOTrainer):
    """GRPO with two-turn focus trajectories as the unit of sampling (module docstring)."""

    def __init__(self, cfg: GRPOConfig, focus: FocusOptions, dataset: list[dict] | None = None) -> None:
        self.focus = focus
        self.last_trajectories: Trajectories | None = None
        self.generated_tokens = 0
        super().__init__(cfg, dataset)

    @paddle.no_grad()
    def rollout(self, rows: list[dict], seed: int) -> tuple[Rollout, np.ndarray, dict[str, np.ndarray]]:
        cfg, g, f = self.cfg, self.cfg.num_generations, self.focus
        traj = rollout_trajectories(self.rollout_model, self.processor, [r["problem"] for r in rows],
                                    [r["images"][0] for r in rows], g, max_box_tokens=f.max_box_tokens,
                                    max_answer_tokens=cfg.max_completion_length, seed=seed, do_sample=True,
                                    temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k, layout=f.layout,
                                    min_crop_side=f.min_crop_side, max_prompt_length=cfg.max_prompt_length)
        self.last_trajectories = traj
        self.generated_tokens += traj.generated_tokens
        sizes = [[image_size_of(r["images"][0])] for r in rows]  # the full images' (W, H)
        columns = reward_columns(rows, sizes, sizes, self.family, g)
        columns["focus_status"] = [b.status for b in traj.boxes]
        columns["focus_box"] = [list(b.focus) if b.ok else None for b in traj.boxes]
        scores = self.reward([a or "" for a in traj.answers], **columns)
        inputs, mask, owner = merge_turns(traj, self.processor.pad_token_id)
        total = np.asarray(scores.total, dtype=np.float64)[owner]  # (2BG,) each row carries its trajectory's reward
        per_fn = {k: np.asarray(v, dtype=np.float64)[owner] for k, v in scores.per_reward.items()}
        texts = [traj.box_turn.texts[o] if (r // g) % 2 == 0 else (traj.answers[o] or "") for r, o in enumerate(owner)]
        mb = Rollout(inputs, mask, texts, [row for row in rows for _ in range(2)])  # one row per block of G
        return mb, total, per_fn


def load_online_config(path: str | None, overrides: list[str] | None = None) -> tuple[GRPOConfig, FocusOptions]:
    """A GRPO recipe with a ``focus:`` section (FocusOptions); ``focus.<key>=value`` overrides that section."""
    import yaml

    d: dict[str, Any] = {}
    if path is not None:
        with open(path, encoding="utf-8") as fh:
            d = yaml.safe_load(fh) or {}
    focus = dict(d.pop("focus", None) or {})
    rest = []
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if key.startswith("focus.") and sep:
            focus[key[len("focus."):]] = yaml.safe_load(value)
        else:
            rest.append(item)
    for item in rest:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r}: expected key=value")
        d[key] = yaml.safe_load(value)
    return GRPOConfig.from_dict(d, source=path or "config"), config_io.from_dict(FocusOptions, focus,
                                                                                    f"{path or 'config'}: focus")


def focus_rows(focus: FocusOptions) -> list[dict[str, Any]]:
    """Training rows of the focus section's Visual-CoT files."""
    from paddlemix_r1.focus.selfgen import read_viscot

    if not focus.data_files:
        raise ValueError("focus.data_files: the Visual-CoT files to train on are required")
    items = read_viscot(focus.data_files, focus.image_root, focus.max_items)
    return [{"id": str(it["id"]), "images": [it["image"]], "problem": it["question"], "solution": it["answer"],
             "task": "focus_vqa", "evidence": list(it["evidence"]) if it["evidence"] is not None else None}
            for it in items]


def run_online(path: str | None, overrides: list[str] | None = None) -> list[dict[str, float]]:
    cfg, focus = load_online_config(path, overrides)
    return FocusGRPOTrainer(cfg, focus, dataset=focus_rows(focus)).train()
