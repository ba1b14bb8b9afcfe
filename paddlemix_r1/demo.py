"""The CPU demo: the whole pipeline learning on a synthetic counting task, from nothing, in minutes.

1. build a tiny Qwen2.5-VL (random weights) with a real tokenizer and chat template;
2. generate synthetic counting images (1-3 red squares on a 2 x 2 grid of 28-px cells, so each cell is
   one merged vision token) for training and testing;
3. evaluate with the real evaluator (eval/test_r1-v.py's code path) -> "initial";
4. a short supervised warm-up (cross-entropy on the assistant tokens) that teaches the answer format
   with random counts, so accuracy stays at chance level;
5. evaluate -> "before" (the GRPO starting point);
6. GRPO with the counting + format rewards and a KL term to the warm-up model;
7. evaluate -> "after"; write summary.json, VisualDL logs and a PNG of the reward curve.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass

import numpy as np

from paddlemix_r1 import atomic
from paddlemix_r1.data.synthetic import counting_rows
from paddlemix_r1.tasks import row_conversation

TEST_NAME = "synthetic_counting_test"
MAX_COUNT = 3
PROMPT_METHOD = "r1"
"""The demo trains with the evaluation prompt (the counting task's ``r1`` template), not R1-V's training one."""


@dataclass
class DemoSettings:
    sft_steps: int = 90
    """Warm-up steps (batch 8): long enough to learn the answer format."""
    sft_true_answers: bool = False
    """Warm-up targets carry the true count (True) or a random one (False, the default: a format-only
    warm-up, so accuracy before GRPO is at chance, 1/3, whatever the seed; with true counts some seeds
    already learned to count during the warm-up, leaving GRPO nothing to show)."""
    grpo_steps: int = 800
    train_rows: int = 256
    test_rows: int = 64
    prompts_per_step: int = 8
    num_generations: int = 8
    learning_rate: float = 5e-4
    beta: float = 0.04
    """KL coefficient against the warm-up model. Without it (beta 0) the tiny policy often collapsed to
    one confident answer per image before it learned to count (84-px images, 400 steps: seeds 0, 1, 4
    gained nothing)."""
    temperature: float = 1.0
    image: int = 56
    """Side of the square images in pixels: (image / 28)^2 cells, each one merged vision token. With 84
    (3 x 3 cells) the tiny model learned to count late or not at all on some seeds; 56 (2 x 2) gives each
    square a quarter of the image tokens."""
    seed: int = 2
    """Seed of the model init, data and sampling."""

    @classmethod
    def smoke(cls) -> DemoSettings:
        """A short run for CI: the same pipeline, fewer steps and rows."""
        return cls(grpo_steps=40, train_rows=128, test_rows=24)


def _write_test_set(rows: list[dict], out_dir: str) -> str:
    """SuperCLEVR-style jsonl + PNG images, so the real readers and evaluator load it."""
    img_dir = os.path.join(out_dir, "images")
    os.makedirs(img_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{TEST_NAME}.jsonl")
    with open(path, "w", encoding="utf-8") as f:
        for i, r in enumerate(rows):
            name = f"{i:04d}.png"
            r["images"][0].save(os.path.join(img_dir, name))
            f.write(json.dumps({"image_path": f"images/{name}", "question": r["problem"],
                                "ground_truth": r["solution"]}) + "\n")
    return path


def _evaluate(model_dir: str, data_dir: str, out_dir: str, label: str) -> dict:
    from paddlemix_r1.eval import cli

    argv = ["--model_name", label, "--method", "r1", "--model_path", model_dir, "--data_root", data_dir,
            "--image_root", data_dir, "--test_datasets", TEST_NAME, "--output_dir", os.path.join(out_dir, "eval"),
            "--batch_size", "16", "--max_new_tokens", "24", "--task", "counting", "--dtype", "float32"]
    summary = cli.run(cli.r1v_parser().parse_args(argv), {TEST_NAME: "counting"})[0]
    return {"accuracy": summary.accuracy, "correct": summary.correct, "n": summary.n}


def plot_curve(values: list[float], path: str, title: str,
               segments: list[tuple[int, str]] | None = None) -> None:
    """Write a PNG line plot of per-step rewards: the raw values and a 5-step moving average, with axes.

    ``segments``: (first index, label) of consecutive parts (curriculum stages): each is smoothed on
    its own and its start is marked with a vertical line and its label. Drawn on a ``Figure`` with the
    Agg canvas, not through ``pyplot``, so the caller's backend and open figures are left alone.
    """
    from matplotlib.figure import Figure

    steps = np.arange(1, len(values) + 1)
    fig = Figure(figsize=(6.4, 3.6), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    ax.plot(steps, values, color="#a8bde6", linewidth=1, marker="." if len(values) < 40 else None, label="per step")
    bounds = [(0, len(values), None)] if not segments else [
        (start, segments[k + 1][0] if k + 1 < len(segments) else len(values), label)
        for k, (start, label) in enumerate(segments)]
    smoothed_label = "5-step moving average"
    for start, stop, label in bounds:
        part = values[start:stop]
        if len(part) >= 5:
            smooth = np.convolve(part, np.ones(5) / 5, mode="valid")
            x = steps[start:stop][2:-2]  # each average sits at the middle of its 5 steps
            ax.plot(x, smooth, color="#1e46c8", linewidth=2.5, label=smoothed_label)
            smoothed_label = None  # one legend entry for all segments
        if label is not None:
            ax.axvline(start + 0.5, color="#c83c3c", linewidth=1)
            ax.annotate(label, (start + 0.5, 1), xycoords=("data", "axes fraction"), xytext=(4, -4),
                        textcoords="offset points", va="top", color="#c83c3c", fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("GRPO step")
    ax.set_ylabel("mean reward")
    ax.set_xlim(0.5, len(values) + 0.5)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.savefig(path)


def build_demo_model(output_dir: str, seed: int, image: int) -> str:
    """The demos' tiny random Qwen2.5-VL in ``output_dir/base-model``, sized for ``image`` x ``image`` pictures."""
    from paddlemix_r1.models import build_tiny_checkpoint

    base = os.path.join(output_dir, "base-model")
    build_tiny_checkpoint(base, family="qwen2_5_vl", seed=seed, hidden=128, layers=2, vision_dim=64,
                          vision_depth=2, max_pixels=image * image)
    return base


def demo_images(image: int) -> dict:
    """The demos' synthetic pictures: 1..MAX_COUNT red squares on ``image`` x ``image`` (counting_rows kwargs)."""
    return dict(max_count=MAX_COUNT, size=(image, image), shapes=("square",), colors=("red",))


def run_demo(output_dir: str, settings: DemoSettings | None = None) -> dict:
    import paddle

    from paddlemix_r1.grpo.config import GRPOConfig
    from paddlemix_r1.grpo.sft import run_sft
    from paddlemix_r1.grpo.trainer import GRPOTrainer
    from paddlemix_r1.models import from_pretrained
    from paddlemix_r1.processing import Processor

    s = settings or DemoSettings()
    t_start = time.perf_counter()
    os.makedirs(output_dir, exist_ok=True)
    paddle.seed(s.seed)

    base = build_demo_model(output_dir, s.seed, s.image)
    task = demo_images(s.image)
    train = counting_rows(s.train_rows, seed=s.seed + 1, **task)
    data_dir = os.path.join(output_dir, "data")
    _write_test_set(counting_rows(s.test_rows, seed=s.seed + 2, **task), data_dir)

    print(f"[demo] evaluating the random model on {s.test_rows} test images")
    initial = _evaluate(base, data_dir, output_dir, "initial")

    print(f"[demo] supervised warm-up, {s.sft_steps} steps (teaches the answer format)")
    proc = Processor.from_pretrained(base)
    model = from_pretrained(base)

    def conversation(r):
        return row_conversation(r, PROMPT_METHOD)

    def answer(r, rng):
        k = r["solution"] if s.sft_true_answers else int(rng.integers(1, MAX_COUNT + 1))
        return f"<think>I count.</think><answer>{k}</answer>"

    sft_losses = run_sft(model, proc, train, conversation, answer, steps=s.sft_steps, batch_size=8,
                         learning_rate=3e-3, seed=s.seed)
    sft_dir = os.path.join(output_dir, "sft-model")
    model.save_pretrained(sft_dir)
    proc.save_pretrained(sft_dir)
    before = _evaluate(sft_dir, data_dir, output_dir, "before")

    print(f"[demo] GRPO, {s.grpo_steps} steps x {s.prompts_per_step} prompts x {s.num_generations} completions")
    grpo_dir = os.path.join(output_dir, "grpo")
    cfg = GRPOConfig(model_name_or_path=sft_dir, output_dir=grpo_dir, task="counting", task_type=PROMPT_METHOD,
                     reward_funcs=["counting", "format"], reward_weights=[1.0, 0.5], beta=s.beta,
                     temperature=s.temperature,
                     num_generations=s.num_generations, prompts_per_step=s.prompts_per_step,
                     max_completion_length=24, learning_rate=s.learning_rate, max_steps=s.grpo_steps,
                     save_steps=0, save_total_limit=1, seed=s.seed, log_completions_steps=10)
    history = GRPOTrainer(cfg, dataset=train).train()
    final = os.path.join(grpo_dir, f"checkpoint-{s.grpo_steps}", "model")
    after = _evaluate(final, data_dir, output_dir, "after")

    curve = [h["reward"] for h in history]
    plot_curve(curve, os.path.join(output_dir, "reward_curve.png"), "GRPO mean reward (counting + 0.5 x format)")
    summary = {
        "initial": initial, "before": before, "after": after, "reward_curve": curve,
        "counting_reward_curve": [h.get("rewards/counting/mean") for h in history],
        "sft_loss": sft_losses, "seconds": round(time.perf_counter() - t_start, 1),
        "settings": s.__dict__, "model": final, "visualdl_logdir": os.path.join(grpo_dir, "vdl"),
    }
    atomic.write_json(os.path.join(output_dir, "summary.json"), summary)
    print("\n stage            accuracy")
    print(f" random init      {initial['accuracy']:.3f}  ({initial['correct']}/{initial['n']})")
    print(f" before (SFT)     {before['accuracy']:.3f}  ({before['correct']}/{before['n']})")
    print(f" after (GRPO)     {after['accuracy']:.3f}  ({after['correct']}/{after['n']})")
    print(f"\n[demo] {summary['seconds']} s; summary in {os.path.join(output_dir, 'summary.json')}")
    return summary
