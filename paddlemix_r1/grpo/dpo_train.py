"""Step-level DPO on focus-region preference pairs (VisRL): ``paddlemix-r1 dpo --config C``.

A pair is VisRL's record (``focus.selfgen``): one question and image, a chosen and a rejected box step
(``chosen_step`` / ``rejected_step``, FOCUS-frame box texts) and a chosen and a rejected answer.

- Stage 1 (``stage: 1``): DPO on the box step only. Prompt: the full image and the question with the
  trajectory instruction (``focus.trajectory.box_conversation``).
- Stage 2 (``stage: 2``): ``box_weight`` x box-step DPO + ``answer_weight`` x answer-step DPO (0.5 / 0.5).
  The answer step's prompt holds the full image and the crop of the CHOSEN box, for the chosen and the
  rejected answer alike, as VisRL's stage 2 does (the rejected answer was sampled under its own, other
  crop): the answer step compares the two answers given the good region.

Log-probs are summed over each completion's tokens (eos included), with the prompt, image and crop
tokens outside the sum (the log-prob pass of ``grpo.sft.build_sft_inputs``). The reference is the
policy with its LoRA adapters switched off (``use_peft``: VisRL's setting, LoRA r8 / alpha 16) or a
frozen copy of the starting checkpoint. AdamW, linear warmup then cosine decay (``warmup_ratio``),
gradient accumulation, global-norm clipping; checkpoints through ``grpo.checkpoint.save_checkpoint``
(``model/`` merged HF weights + processor files, ``adapter/`` in PEFT's layout with LoRA).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import paddle

from paddlemix_r1.focus import config as config_io
from paddlemix_r1.focus.boxes import MIN_CROP_SIDE, crop_image, parse_focus_box
from paddlemix_r1.focus.trajectory import (
    BOX_INSTRUCTION,
    LAYOUTS,
    TRAJECTORY_INSTRUCTION,
    answer_conversation,
    box_conversation,
)
from paddlemix_r1.grpo import checkpoint as ckpt
from paddlemix_r1.grpo.dpo import LOSS_TYPES, combine_steps, dpo_loss
from paddlemix_r1.grpo.logprobs import completion_logprobs
from paddlemix_r1.grpo.sft import build_sft_inputs
from paddlemix_r1.models import lora
from paddlemix_r1.processing.image_processor import load_image

RECORD_FIELDS = ("images", "conversations", "chosen_step", "rejected_step", "chosen", "rejected")


@dataclass
class DPOTrainConfig:
    model_name_or_path: str = ""
    """Starting checkpoint (VisRL: the merged SFT model for stage 1, the merged stage-1 model for stage 2)."""
    data_files: list[str] = field(default_factory=list)
    """Preference records (JSON list or JSONL), VisRL's format."""
    image_root: str = ""
    """Folder relative image paths are resolved against."""
    output_dir: str = "outputs/visrl_dpo"
    stage: int = 1
    """1: box step only; 2: box_weight x box + answer_weight x answer (answer under the chosen crop)."""
    box_weight: float = 0.5
    answer_weight: float = 0.5
    beta: float = 0.1
    loss_type: str = "sigmoid"
    label_smoothing: float = 0.0
    sft_weight: float = 0.0
    """+ this x the chosen completions' mean token NLL, per step (TRL: ``loss_type=[..., "sft"]``,
    ``loss_weights=[1, w]``; RPO's alpha). 0: plain DPO, VisRL's setting."""
    layout: str = "visrl"
    """The answer step's prompt layout (focus.trajectory.LAYOUTS)."""
    min_crop_side: int = MIN_CROP_SIDE
    use_peft: bool = True
    lora_r: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    freeze_vision: bool = True
    """Full fine-tuning only (LoRA never adapts the vision tower)."""
    learning_rate: float = 5e-6
    lr_scheduler_type: str = "cosine"
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    num_train_epochs: float = 5.0
    max_steps: int | None = None
    """Optimizer steps; None: num_train_epochs over the pairs."""
    per_device_batch_size: int = 3
    """Pairs per micro-batch."""
    gradient_accumulation_steps: int = 8
    max_prompt_length: int | None = None
    min_pixels: int | None = None
    max_pixels: int | None = None
    dtype: str = "float32"
    seed: int = 88
    save_steps: int = 200
    """Checkpoint every N optimizer steps (0: only at the end)."""
    save_total_limit: int = 2
    logging_steps: int = 1

    def __post_init__(self) -> None:
        if self.stage not in (1, 2):
            raise ValueError(f"dpo stage must be 1 (box step) or 2 (box + answer), got {self.stage}")
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"dpo loss_type must be one of {LOSS_TYPES}, got {self.loss_type!r}")
        if self.layout not in LAYOUTS:
            raise ValueError(f"dpo layout must be one of {LAYOUTS}, got {self.layout!r}")
        if self.per_device_batch_size < 1 or self.gradient_accumulation_steps < 1:
            raise ValueError("per_device_batch_size and gradient_accumulation_steps must be >= 1")
        if self.sft_weight < 0:
            raise ValueError(f"dpo sft_weight must be >= 0, got {self.sft_weight}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")

    @classmethod
    def load(cls, path: str | None, overrides: list[str] | dict[str, Any] | None = None) -> DPOTrainConfig:
        return config_io.load(cls, path, overrides)

    def lora_config(self) -> lora.LoraConfig:
        return lora.LoraConfig(r=self.lora_r, alpha=self.lora_alpha, dropout=self.lora_dropout)


# ---- records ---------------------------------------------------------------------------------------


def _value(rec: dict, key: str, where: str, allow_empty: bool = False) -> str:
    turn = rec[key]
    if not isinstance(turn, dict) or not isinstance(turn.get("value"), str) or not (allow_empty or turn["value"].strip()):
        what = "text" if allow_empty else "non-empty text"
        raise ValueError(f"{where}: field {key!r} must be {{'from': 'gpt', 'value': {what}}}, got {turn!r}")
    return turn["value"].strip()


def question_of(prompt: str) -> str:
    """The question of a record's human turn: without ``<image>`` tags and the box / trajectory instruction."""
    text = prompt.replace("<image>", "")
    for instruction in (TRAJECTORY_INSTRUCTION, BOX_INSTRUCTION):
        text = text.replace(instruction, "")
    return text.strip()


def pair_from_record(rec: Any, where: str, image_root: str = "", min_crop_side: int = MIN_CROP_SIDE) -> dict:
    """One record -> {question, image, chosen_step, rejected_step, chosen, rejected, crop (of the chosen box)}."""
    if not isinstance(rec, dict):
        raise ValueError(f"{where}: a record must be an object, got {type(rec).__name__}")
    missing = [k for k in RECORD_FIELDS if k not in rec]
    if missing:
        raise ValueError(f"{where}: missing field(s) {missing} (a record has {list(RECORD_FIELDS)})")
    images = rec["images"]
    if not isinstance(images, list) or len(images) != 1 or not isinstance(images[0], str):
        raise ValueError(f"{where}: field 'images' must be [full image path], got {images!r}")
    path = images[0] if os.path.isabs(images[0]) else os.path.join(image_root, images[0])
    if not os.path.isfile(path):
        raise ValueError(f"{where}: field 'images': file not found: {path}")
    conv = rec["conversations"]
    if not isinstance(conv, list) or not conv or not isinstance(conv[0], dict) or conv[0].get("from") != "human":
        raise ValueError(f"{where}: field 'conversations' must start with a human turn, got {conv!r}")
    question = question_of(str(conv[0].get("value", "")))
    if not question:
        raise ValueError(f"{where}: field 'conversations': empty question")
    # The rejected answer may be empty: a turn 2 that ended at once scores 0 and ``focus.selfgen`` writes it
    # (its completion is eos alone); every other field names a box or an answer that scored high.
    pair = {"question": question, "image": path,
            **{k: _value(rec, k, where, allow_empty=k == "rejected")
               for k in ("chosen_step", "rejected_step", "chosen", "rejected")}}
    image = load_image(path)
    box = parse_focus_box(pair["chosen_step"], image.size, min_crop_side)
    if not box.ok:
        raise ValueError(f"{where}: field 'chosen_step': {pair['chosen_step']!r} is not a usable FOCUS box "
                         f"({box.status}); the answer step is trained under the chosen box's crop")
    pair["crop"] = crop_image(image, box)
    pair["full"] = image
    return pair


def read_pairs(paths: Sequence[str], image_root: str = "", min_crop_side: int = MIN_CROP_SIDE) -> list[dict]:
    """The pairs of VisRL-format files (JSON list or JSONL); errors name ``<file>:<index>``."""
    pairs = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        if text.lstrip().startswith("["):
            recs = [(f"{path}:{i}", r) for i, r in enumerate(json.loads(text))]
        else:
            recs = [(f"{path}:{i + 1}", json.loads(line)) for i, line in enumerate(text.splitlines()) if line.strip()]
        pairs.extend(pair_from_record(r, where, image_root, min_crop_side) for where, r in recs)
    if not pairs:
        raise ValueError(f"no preference records in {list(paths)}")
    return pairs


# ---- the loss of a batch of pairs ------------------------------------------------------------------


def _summed(model, inputs, mask) -> paddle.Tensor:
    logps = completion_logprobs(model, inputs, temperature=1.0)  # (2P, T)
    return (logps * mask.astype(logps.dtype)).sum(axis=1)  # (2P,)


def step_logps(policy, reference, processor, prompts: list, images: list, chosen: list[str], rejected: list[str]
               ) -> tuple[paddle.Tensor, ...]:
    """Summed log-probs (P,) of chosen and rejected under the policy (with gradient) and the reference.

    ``reference``: a model, or None for the policy with its adapters off. Returns
    (policy_chosen, policy_rejected, ref_chosen, ref_rejected, chosen_lengths, rejected_lengths)."""
    p = len(prompts)
    inputs, mask = build_sft_inputs(policy, processor, prompts + prompts, images + images, chosen + rejected)
    with paddle.no_grad():
        was_training = policy.training
        policy.eval()
        if reference is None:
            with lora.adapters_disabled(policy):
                ref = _summed(policy, inputs, mask)  # (2P,)
        else:
            ref = _summed(reference, inputs, mask)
        policy.train(was_training)
    pol = _summed(policy, inputs, mask)  # (2P,)
    lengths = mask.sum(axis=1)  # (2P,)
    return pol[:p], pol[p:], ref[:p], ref[p:], lengths[:p], lengths[p:]


def pair_loss(policy, reference, processor, pairs: Sequence[dict], cfg: DPOTrainConfig
              ) -> tuple[paddle.Tensor, dict[str, float]]:
    """The DPO loss of ``pairs`` for ``cfg.stage`` (module docstring) and its metrics."""
    q = [pr["question"] for pr in pairs]
    kw = dict(beta=cfg.beta, loss_type=cfg.loss_type, label_smoothing=cfg.label_smoothing, sft_weight=cfg.sft_weight)
    pc, pr_, rc, rr, lc, lr_ = step_logps(policy, reference, processor, [box_conversation(x) for x in q],
                                          [[pr["full"]] for pr in pairs], [pr["chosen_step"] for pr in pairs],
                                          [pr["rejected_step"] for pr in pairs])
    box = dpo_loss(pc, pr_, rc, rr, chosen_lengths=lc, rejected_lengths=lr_, **kw)
    if cfg.stage == 1:
        loss, metrics = box
        return loss, {"loss": float(loss), **{f"box/{k}": v for k, v in metrics.items()}}
    prompts = [answer_conversation(pr["question"], pr["chosen_step"], cfg.layout) for pr in pairs]
    pc, pr_, rc, rr, lc, lr_ = step_logps(policy, reference, processor, prompts,
                                          [[pr["full"], pr["crop"]] for pr in pairs], [pr["chosen"] for pr in pairs],
                                          [pr["rejected"] for pr in pairs])
    answer = dpo_loss(pc, pr_, rc, rr, chosen_lengths=lc, rejected_lengths=lr_, **kw)
    loss, metrics = combine_steps({"box": box, "answer": answer}, {"box": cfg.box_weight, "answer": cfg.answer_weight})
    return loss, {"loss": float(loss), **metrics}


# ---- the loop --------------------------------------------------------------------------------------


def total_steps(cfg: DPOTrainConfig, num_pairs: int) -> int:
    if cfg.max_steps is not None:
        return cfg.max_steps
    per_step = cfg.per_device_batch_size * cfg.gradient_accumulation_steps
    return max(1, math.ceil(cfg.num_train_epochs * num_pairs / per_step))


class DPOTrainer:
    """Policy (LoRA or full), reference, optimizer and schedule for ``cfg``; ``train()`` runs the steps."""

    def __init__(self, cfg: DPOTrainConfig, pairs: list[dict] | None = None, model=None, processor=None) -> None:
        from paddlemix_r1.grpo.trainer import lr_lambda
        from paddlemix_r1.models import from_pretrained
        from paddlemix_r1.processing import Processor

        self.cfg = cfg
        paddle.seed(cfg.seed)
        self.processor = processor or Processor.from_pretrained(cfg.model_name_or_path, min_pixels=cfg.min_pixels,
                                                                max_pixels=cfg.max_pixels)
        self.model = model or from_pretrained(cfg.model_name_or_path, dtype=cfg.dtype)
        self.pairs = pairs if pairs is not None else read_pairs(cfg.data_files, cfg.image_root, cfg.min_crop_side)
        self.reference = None
        if cfg.use_peft:
            if not lora.lora_layers(self.model):
                lora.apply_lora(self.model, cfg.lora_config())  # only the adapters train from here on
        else:
            if cfg.freeze_vision:
                for p in self.model.visual.parameters():
                    p.stop_gradient = True
            self.reference = from_pretrained(cfg.model_name_or_path, dtype=cfg.dtype)
            for p in self.reference.parameters():
                p.stop_gradient = True
            self.reference.eval()
        self.params = [p for p in self.model.parameters() if not p.stop_gradient]
        self.max_steps = total_steps(cfg, len(self.pairs))
        warmup = math.ceil(cfg.warmup_ratio * self.max_steps)
        self.scheduler = paddle.optimizer.lr.LambdaDecay(cfg.learning_rate,
                                                         lr_lambda(cfg.lr_scheduler_type, warmup, self.max_steps))
        clip = paddle.nn.ClipGradByGlobalNorm(cfg.max_grad_norm) if cfg.max_grad_norm else None
        self.optimizer = paddle.optimizer.AdamW(learning_rate=self.scheduler, parameters=self.params,
                                                beta1=cfg.adam_beta1, beta2=cfg.adam_beta2, epsilon=cfg.adam_epsilon,
                                                weight_decay=cfg.weight_decay, grad_clip=clip)
        self.rng = np.random.default_rng(cfg.seed)
        self._order: list[int] = []
        self.step = 0
        self.history: list[dict[str, float]] = []

    def _next_pairs(self, n: int) -> list[dict]:
        out = []
        while len(out) < n:
            if not self._order:
                self._order = self.rng.permutation(len(self.pairs)).tolist()  # a new epoch
            out.append(self.pairs[self._order.pop()])
        return out

    def train_step(self) -> dict[str, float]:
        cfg, t0 = self.cfg, time.perf_counter()
        self.model.train()
        sums: dict[str, float] = {}
        for _ in range(cfg.gradient_accumulation_steps):
            loss, metrics = pair_loss(self.model, self.reference, self.processor,
                                      self._next_pairs(cfg.per_device_batch_size), cfg)
            (loss / cfg.gradient_accumulation_steps).backward()
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + v / cfg.gradient_accumulation_steps
        self.optimizer.step()
        self.optimizer.clear_grad(set_to_zero=False)
        sums["lr"] = float(self.optimizer.get_lr())
        self.scheduler.step()
        self.model.eval()
        self.step += 1
        sums.update(step=float(self.step), seconds=time.perf_counter() - t0)
        return sums

    def save(self) -> str:
        cfg = self.cfg
        state = {"config": asdict(cfg), "history": self.history, "max_steps": self.max_steps}
        return ckpt.save_checkpoint(cfg.output_dir, self.step, self.model, self.optimizer, self.scheduler, state,
                                    self.processor, cfg.save_total_limit,
                                    base_model_name_or_path=cfg.model_name_or_path)

    def train(self, num_steps: int | None = None, save: bool = True) -> list[dict[str, float]]:
        stop = self.max_steps if num_steps is None else min(self.max_steps, self.step + num_steps)
        while self.step < stop:
            m = self.train_step()
            self.history.append(m)
            if self.cfg.logging_steps and self.step % self.cfg.logging_steps == 0:
                print(f"[dpo stage {self.cfg.stage}] step {self.step}/{self.max_steps} loss {m['loss']:.4f} "
                      f"box margin {m.get('box/rewards/margins', float('nan')):.4f}", flush=True)
            if save and self.cfg.save_steps and self.step % self.cfg.save_steps == 0:
                self.save()
        if save and (not self.cfg.save_steps or self.step % self.cfg.save_steps):
            self.save()
        return self.history


def run_dpo(cfg: DPOTrainConfig) -> tuple[list[dict[str, float]], str]:
    """Train ``cfg``; returns the history and the last checkpoint directory."""
    trainer = DPOTrainer(cfg)
    history = trainer.train()
    return history, os.path.join(cfg.output_dir, f"checkpoint-{trainer.step}")
