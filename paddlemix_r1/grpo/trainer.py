"""The GRPO loop, single process (rank-aware pieces are marked for the distributed launcher).

One optimizer step:
  sample B prompts -> rollout G completions each (vision + prefill once per prompt) -> rewards
  (weighted sum) -> group advantages -> [old / ref log-probs] -> policy log-probs with the rollout's
  positions, pixels and temperature -> loss -> backward per micro-batch -> clip -> AdamW step.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import paddle

from paddlemix_r1.generation import generate
from paddlemix_r1.grpo import checkpoint as ckpt
from paddlemix_r1.grpo.advantages import compute_advantages
from paddlemix_r1.grpo.config import GRPOConfig
from paddlemix_r1.grpo.logprobs import RolloutInputs, completion_logprobs
from paddlemix_r1.grpo.loss import grpo_loss
from paddlemix_r1.grpo.sampler import PromptSampler
from paddlemix_r1.models import build_tiny_checkpoint, from_pretrained
from paddlemix_r1.processing import Processor
from paddlemix_r1.rewards import WeightedReward

PER_ROW_COLUMNS = ("images", "problem", "id", "task")


class NonFiniteError(RuntimeError):
    """Too many consecutive steps with a non-finite loss or gradient."""


@dataclass
class MicroBatch:
    """One rollout micro-batch and everything the loss needs about it (rows group-major)."""

    inputs: RolloutInputs
    completion_mask: paddle.Tensor  # (N, T)
    advantages: paddle.Tensor  # (N,)
    old_logps: paddle.Tensor | None = None  # (N, T)
    ref_logps: paddle.Tensor | None = None  # (N, T)
    texts: list[str] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)


def lr_lambda(kind: str, warmup: int, total: int):
    """Multiplier of the base learning rate at step s: linear warmup, then constant/linear/cosine."""

    def f(s: int) -> float:
        if warmup and s < warmup:
            return (s + 1) / warmup
        progress = (s - warmup) / max(1, total - warmup)
        if kind == "constant":
            return 1.0
        if kind == "linear":
            return max(0.0, 1.0 - progress)
        if kind == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        raise ValueError(f"lr_scheduler_type must be constant, linear or cosine, got {kind!r}")

    return f


def load_dataset(cfg: GRPOConfig) -> list[dict]:
    from paddlemix_r1.data import synthetic

    if cfg.dataset == "synthetic_counting":
        return synthetic.counting_rows(cfg.num_train_samples, seed=cfg.seed)
    if cfg.dataset == "synthetic_rec":
        return synthetic.rec_rows(cfg.num_train_samples, seed=cfg.seed)
    if cfg.dataset == "files":
        from paddlemix_r1.data.readers import read_training_files

        return read_training_files(cfg.data_files, cfg.image_root, task=cfg.task)
    raise ValueError(f"dataset must be synthetic_counting, synthetic_rec or files, got {cfg.dataset!r}")


class GRPOTrainer:
    def __init__(self, cfg: GRPOConfig, dataset: list[dict] | None = None):
        """``dataset``: rows in the synthetic/reader row format; None loads ``cfg.dataset``.
        Reward functions are looked up by name in the reward registry (``register_reward`` adds one)."""
        self.cfg = cfg
        os.makedirs(cfg.output_dir, exist_ok=True)
        paddle.seed(cfg.seed)
        path = cfg.model_name_or_path
        if path == "tiny":
            path = os.path.join(cfg.output_dir, "tiny-model")
            if not os.path.exists(os.path.join(path, "config.json")):
                build_tiny_checkpoint(path, family=cfg.tiny_family, seed=cfg.seed)
        self.model_path = path
        self.processor = Processor.from_pretrained(path, min_pixels=cfg.min_pixels, max_pixels=cfg.max_pixels)
        self.model = from_pretrained(path, dtype=cfg.dtype)
        self.model.model.recompute = cfg.gradient_checkpointing
        self.family = self.model.config.model_type
        self.ref_model = None
        if cfg.beta != 0.0:
            self.ref_model = from_pretrained(path, dtype=cfg.dtype)
            for p in self.ref_model.parameters():
                p.stop_gradient = True
        if cfg.freeze_vision:
            for p in self.model.visual.parameters():
                p.stop_gradient = True
        self.params = [p for p in self.model.parameters() if not p.stop_gradient]
        self.scheduler = paddle.optimizer.lr.LambdaDecay(
            cfg.learning_rate, lr_lambda(cfg.lr_scheduler_type, cfg.warmup_steps, cfg.max_steps))
        self.optimizer = paddle.optimizer.AdamW(
            learning_rate=self.scheduler, parameters=self.params, beta1=cfg.adam_beta1, beta2=cfg.adam_beta2,
            epsilon=cfg.adam_epsilon, weight_decay=cfg.weight_decay)
        self.dataset = dataset if dataset is not None else load_dataset(cfg)
        self.sampler = PromptSampler(len(self.dataset), cfg.seed)
        self.reward = WeightedReward(dict(zip(cfg.reward_funcs, cfg.reward_weights)))
        self.step = 0
        self.nonfinite_total = 0
        self.nonfinite_run = 0
        self.history: list[dict[str, float]] = []
        self._buffer: list[list[MicroBatch]] = []
        self._writer = None
        if cfg.visualdl:
            from visualdl import LogWriter

            self._writer = LogWriter(logdir=os.path.join(cfg.output_dir, "vdl"))
        resume = ckpt.resolve(cfg.resume_from_checkpoint, cfg.output_dir)
        if resume:
            self._restore(resume)

    # ----- rollout -----
    def _conversation(self, row: dict) -> list[dict]:
        images = row["images"] if isinstance(row["images"], list) else [row["images"]]
        text = self.cfg.template.format(Question=row["problem"])
        return [{"role": "user", "content": [{"type": "image"} for _ in images] + [{"type": "text", "text": text}]}]

    def _reward_columns(self, rows: list[dict], sizes: dict, g: int) -> dict[str, list]:
        """Dataset columns repeated for each of the G completions, plus the coordinate frames."""
        cols: dict[str, list] = {}
        for key in rows[0]:
            if key not in PER_ROW_COLUMNS:
                cols[key] = [r[key] for r in rows for _ in range(g)]
        cols["image_size"] = [list(s[0]) for s in sizes["original_sizes"] for _ in range(g)]
        cols["resized_size"] = [list(s[0]) for s in sizes["resized_sizes"] for _ in range(g)]
        cols["model_family"] = [self.family] * (len(rows) * g)
        return cols

    @paddle.no_grad()
    def rollout(self, rows: list[dict], seed: int) -> tuple[MicroBatch, np.ndarray, dict[str, np.ndarray]]:
        """Generate G completions for each row and score them (advantages filled in by the caller)."""
        cfg, g = self.cfg, self.cfg.num_generations
        batch = self.processor([self._conversation(r) for r in rows], [r["images"] for r in rows],
                               max_length=cfg.max_prompt_length, return_sizes=True)
        out = generate(self.model, batch, max_new_tokens=cfg.max_completion_length, do_sample=True,
                       temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k, num_return_sequences=g,
                       eos_token_id=self.processor.eos_token_id, pad_token_id=self.processor.pad_token_id, seed=seed)
        texts = self.processor.batch_decode(out.completion_ids.numpy().tolist(), skip_special_tokens=True)
        scores = self.reward(texts, **self._reward_columns(rows, batch, g))
        inputs = RolloutInputs(out.prompt_ids, out.completion_ids, out.attention_mask, out.position_ids,
                               batch.get("pixel_values"), batch.get("image_grid_thw"), g)
        mb = MicroBatch(inputs, out.completion_mask, paddle.zeros([len(texts)]), texts=texts, rows=rows)
        per_fn = {k: np.asarray(v, dtype=np.float64) for k, v in scores.per_reward.items()}
        return mb, np.asarray(scores.total, dtype=np.float64), per_fn

    def generate_round(self) -> tuple[list[list[MicroBatch]], dict[str, float]]:
        """Rollouts for ``steps_per_generation`` optimizer steps, with advantages and old/ref log-probs."""
        cfg, g = self.cfg, self.cfg.num_generations
        per_micro = cfg.prompts_per_step // cfg.gradient_accumulation_steps
        steps, metrics = [], {}
        t0 = time.perf_counter()
        all_rewards, per_fn_all, lengths, truncated = [], {}, [], []
        for s in range(cfg.steps_per_generation):
            idx = self.sampler.next(cfg.prompts_per_step)
            rows = [self.dataset[i] for i in idx]
            micro, rewards = [], []
            for m in range(cfg.gradient_accumulation_steps):
                seed = cfg.seed * 1_000_003 + (self.step + s) * 1009 + m
                mb, total, per_fn = self.rollout(rows[m * per_micro:(m + 1) * per_micro], seed)
                micro.append(mb)
                rewards.append(total)
                for k, v in per_fn.items():
                    per_fn_all.setdefault(k, []).append(v)
                lens = mb.completion_mask.sum(axis=1).numpy()
                lengths.append(lens)
                truncated.append(lens >= cfg.max_completion_length)
            r = np.concatenate(rewards)  # (B*G,) group-major over the step
            adv = compute_advantages(r, g, cfg.scale_rewards)
            offset = 0
            for mb in micro:
                n = mb.completion_mask.shape[0]
                mb.advantages = paddle.to_tensor(adv[offset:offset + n].astype("float32"))
                offset += n
            all_rewards.append(r)
            steps.append(micro)
        t_rollout = time.perf_counter() - t0
        t0 = time.perf_counter()
        need_old = cfg.num_iterations > 1 or cfg.steps_per_generation > 1
        with paddle.no_grad():
            for micro in steps:
                for mb in micro:
                    if need_old:
                        mb.old_logps = completion_logprobs(self.model, mb.inputs, cfg.temperature,
                                                           cfg.logprob_chunk_size)
                    if self.ref_model is not None:
                        mb.ref_logps = completion_logprobs(self.ref_model, mb.inputs, cfg.temperature,
                                                           cfg.logprob_chunk_size)
        r = np.concatenate(all_rewards)
        lens = np.concatenate(lengths)
        metrics.update({"reward": float(r.mean()), "reward_std": float(r.reshape(-1, g).std(axis=1).mean()),
                        "completion_length/mean": float(lens.mean()), "completion_length/max": float(lens.max()),
                        "truncated_fraction": float(np.concatenate(truncated).mean()),
                        "time/rollout": t_rollout, "time/ref_old_logprobs": time.perf_counter() - t0})
        for k, v in per_fn_all.items():
            vals = np.concatenate(v)
            metrics[f"rewards/{k}/mean"] = float(vals.mean())
            metrics[f"rewards/{k}/std"] = float(vals.std())
        return steps, metrics

    # ----- update -----
    def train_step(self, micro: list[MicroBatch]) -> dict[str, float]:
        """One optimizer step over the micro-batches of one step-batch; skipped if anything is non-finite."""
        cfg = self.cfg
        t0 = time.perf_counter()
        total_tokens = float(sum(float(mb.completion_mask.sum()) for mb in micro))
        scale = 1.0 if cfg.loss_type == "dapo" else 1.0 / len(micro)
        sums: dict[str, float] = {}
        finite = True
        for mb in micro:
            logps, ent = completion_logprobs(self.model, mb.inputs, cfg.temperature, cfg.logprob_chunk_size,
                                             with_entropy=True)
            loss, m = grpo_loss(logps, mb.old_logps, mb.ref_logps, mb.advantages, mb.completion_mask,
                                loss_type=cfg.loss_type, epsilon_low=cfg.epsilon_low, epsilon_high=cfg.epsilon_high,
                                beta=cfg.beta, max_completion_length=cfg.max_completion_length,
                                num_items_in_batch=total_tokens)
            loss = loss * scale
            if not bool(paddle.isfinite(loss)):
                finite = False
                break
            loss.backward()
            mask = mb.completion_mask.astype("float32")
            m["entropy"] = (ent * mask).sum() / mask.sum().clip(min=1.0)
            m["loss"] = loss.detach()
            for k, v in m.items():
                if k != "num_tokens":
                    sums[k] = sums.get(k, 0.0) + float(v) / len(micro)
        grad_norm = self._grad_norm() if finite else float("nan")
        if not math.isfinite(grad_norm):
            finite = False
        if finite:
            if cfg.max_grad_norm and grad_norm > cfg.max_grad_norm:
                coef = cfg.max_grad_norm / (grad_norm + 1e-6)
                for p in self.params:
                    if p.grad is not None:
                        p.grad.set_value(p.grad * coef)
            self.optimizer.step()
            self.nonfinite_run = 0
        else:
            self.nonfinite_total += 1
            self.nonfinite_run += 1
        self.optimizer.clear_grad(set_to_zero=False)
        self.scheduler.step()
        if self.nonfinite_run >= cfg.max_consecutive_nonfinite:
            raise NonFiniteError(f"{self.nonfinite_run} consecutive steps with a non-finite loss or gradient "
                                 f"(last at step {self.step}); stopping. Lower the learning rate or check the data.")
        sums.update({"grad_norm": grad_norm, "lr": float(self.optimizer.get_lr()), "skipped": 0.0 if finite else 1.0,
                     "nonfinite_total": float(self.nonfinite_total), "time/update": time.perf_counter() - t0})
        return sums

    def _grad_norm(self) -> float:
        sq = [paddle.sum(p.grad.astype("float32") ** 2) for p in self.params if p.grad is not None]
        return float(paddle.sqrt(paddle.add_n(sq))) if sq else 0.0

    # ----- loop -----
    def train(self, num_steps: int | None = None) -> list[dict[str, float]]:
        """Run until ``max_steps`` (or ``num_steps`` more steps, e.g. to stop part-way); return the history."""
        cfg = self.cfg
        stop = cfg.max_steps if num_steps is None else min(cfg.max_steps, self.step + num_steps)
        bar = None
        if cfg.progress_bar:
            from tqdm import tqdm

            bar = tqdm(total=cfg.max_steps, initial=self.step, desc="grpo", dynamic_ncols=True)
        period = cfg.steps_per_generation * cfg.num_iterations
        gen_metrics: dict[str, float] = {}
        while self.step < stop:
            if self.step % period == 0 or not self._buffer:
                self._buffer, gen_metrics = self.generate_round()
            micro = self._buffer[self.step % cfg.steps_per_generation]
            metrics = {**gen_metrics, **self.train_step(micro)}
            self.step += 1
            metrics["step"] = self.step
            self.history.append(metrics)
            self._log(metrics, micro)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(reward=f"{metrics['reward']:.3f}", loss=f"{metrics.get('loss', float('nan')):.4f}")
            if cfg.save_steps and self.step % cfg.save_steps == 0:
                self.save()
        if bar is not None:
            bar.close()
        skipped = getattr(self.dataset, "skipped", [])
        if skipped:
            print(f"skipped {len(skipped)} bad training rows (first: {skipped[0]})")
        if not cfg.save_steps or self.step % cfg.save_steps:
            self.save()
        if self._writer is not None:
            self._writer.close()
        return self.history

    def _log(self, metrics: dict[str, float], micro: list[MicroBatch]) -> None:
        cfg = self.cfg
        if self._writer is not None and self.step % cfg.logging_steps == 0:
            for k, v in metrics.items():
                if k != "step" and isinstance(v, float) and math.isfinite(v):
                    self._writer.add_scalar(f"train/{k}", v, self.step)
        if cfg.log_completions_steps and self.step % cfg.log_completions_steps == 0:
            with open(os.path.join(cfg.output_dir, "completions.jsonl"), "a", encoding="utf-8") as f:
                for mb in micro:
                    adv = mb.advantages.numpy().tolist()
                    for i, text in enumerate(mb.texts):
                        row = mb.rows[i // cfg.num_generations]
                        f.write(json.dumps({"step": self.step, "id": row.get("id"), "problem": row["problem"],
                                            "solution": row.get("solution"), "completion": text,
                                            "advantage": adv[i]}, default=str) + "\n")

    # ----- checkpoints -----
    def trainer_state(self) -> dict[str, Any]:
        return {"sampler": self.sampler.state_dict(), "nonfinite_total": self.nonfinite_total,
                "nonfinite_run": self.nonfinite_run, "config": self.cfg.to_dict(),
                "history": self.history}

    def save(self) -> str:
        return ckpt.save_checkpoint(self.cfg.output_dir, self.step, self.model, self.optimizer, self.scheduler,
                                    self.trainer_state(), self.model_path, self.cfg.save_total_limit)

    def _restore(self, path: str) -> None:
        state = ckpt.load_checkpoint(path, self.model, self.optimizer, self.scheduler)
        self.step = int(state["step"])
        self.sampler.load_state_dict(state["sampler"])
        self.nonfinite_total = int(state["nonfinite_total"])
        self.nonfinite_run = int(state["nonfinite_run"])
        self.history = list(state.get("history", []))
        period = self.cfg.steps_per_generation * self.cfg.num_iterations
        if self.step % period:
            raise ValueError(f"{path}: step {self.step} is inside a generation round (every {period} steps); "
                             "resume from a checkpoint saved at a multiple of steps_per_generation * num_iterations")
