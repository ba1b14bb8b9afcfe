"""The CPU demo of RACRO's reasoner-in-the-loop reward: a captioner learns to say what a frozen text reasoner
needs to answer the question.

1. a tiny text reasoner (Qwen2ForCausalLM, random weights) is taught by SFT to answer RACRO's reasoner prompt
   ("### The detailed caption of the provided image: There are 2 red squares. ### Question: How many red
   squares are in the image? ...") with ``\\boxed{2}``: the count is recoverable from the caption only;
2. a tiny Qwen2.5-VL captioner (the counting demo's model and pictures: 1-3 red squares on 2 x 2 cells) gets
   a format-only warm-up: RACRO's captioner prompt -> "There are k red squares." with k RANDOM, so its
   captions state counts the reasoner reads, but the wrong count two times in three;
3. "before": the reasoner reward of greedy captions on held-out pictures (about 1/3);
4. GRPO with the ``reasoner`` reward alone (the reasoner in-process, frozen, batched over each step's
   captions), RACRO's captioner prompt with its system turn;
5. "after": the same evaluation; summary.json, the reward curve PNG.
The captioner never sees the answer: the only path to reward is a caption that carries the count.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass

import numpy as np

from paddlemix_r1 import atomic
from paddlemix_r1.data.synthetic import counting_rows
from paddlemix_r1.demo import MAX_COUNT, build_demo_model, demo_images, plot_curve

QUESTION = "How many red squares are in the image?"


def caption_of(count: int) -> str:
    return f"There are {count} red squares."


@dataclass
class RacroDemoSettings:
    reasoner_steps: int = 600
    """SFT steps (batch 16) of the text reasoner on captions stating counts. Its loss sits at the format-only
    level (~0.14: the digit at chance) until it learns to copy the count, in a sudden transition: measured
    near step 400 at width 128 (seed 2); at width 64 not within 800 steps."""
    reasoner_hidden: int = 128
    captioner_sft_steps: int = 60
    """Format-only warm-up of the captioner (random counts in its captions)."""
    grpo_steps: int = 600
    train_rows: int = 256
    test_rows: int = 48
    prompts_per_step: int = 8
    num_generations: int = 8
    """G. RACRO uses 4; the tiny captioner needs more samples per picture to meet the right count in most
    groups (with 4, a third of the groups tie and give no signal)."""
    learning_rate: float = 5e-4
    beta: float = 0.04
    reasoner_temperature: float = 0.0
    """The frozen reasoner decodes greedily here (RACRO samples at 1.0): the tiny reasoner's sampled answers
    would add noise the tiny captioner cannot average out in a few minutes."""
    image: int = 56
    seed: int = 2

    @classmethod
    def smoke(cls) -> RacroDemoSettings:
        """A short run for CI: the same pipeline, a few steps."""
        return cls(reasoner_steps=20, reasoner_hidden=64, captioner_sft_steps=10, grpo_steps=3, train_rows=16,
                   test_rows=8, prompts_per_step=4, num_generations=4)


def _rows(n: int, seed: int, image: int) -> list[dict]:
    rows = counting_rows(n, seed=seed, **demo_images(image))
    return [{**r, "id": f"racro/{seed}/{i}", "problem": QUESTION, "question": f"<image>{QUESTION}", "task": "captioner",
             "solution": str(r["solution"])} for i, r in enumerate(rows)]


def train_reasoner(out_dir: str, steps: int, seed: int = 0, hidden: int = 64) -> str:
    """A tiny Qwen2ForCausalLM SFT-trained to answer RACRO's reasoner prompt from captions stating a count with
    ``\\boxed{count}``; written (weights and tokenizer) to ``out_dir``, returned."""
    from paddlemix_r1.grpo.sft import run_sft
    from paddlemix_r1.models import build_tiny_text_checkpoint, from_pretrained
    from paddlemix_r1.processing.processor import TextProcessor
    from paddlemix_r1.rewards.reasoner import reasoner_messages

    base = build_tiny_text_checkpoint(out_dir + "-init", seed=seed, hidden=hidden, layers=2, heads=4, kv_heads=2)
    model, proc = from_pretrained(base), TextProcessor.from_pretrained(base)
    rng = np.random.default_rng(seed)
    rows = [{"images": [], "count": int(k)} for k in rng.integers(1, MAX_COUNT + 1, 512)]
    losses = run_sft(model, proc, rows, lambda r: reasoner_messages(caption_of(r["count"]), f"<image>{QUESTION}"),
            lambda r, _rng: f"\\boxed{{{r['count']}}}", steps=steps, batch_size=16, learning_rate=3e-3, seed=seed)
    print(f"[racro demo] reasoner SFT loss {losses[0]:.3f} -> {losses[-1]:.4f}")
    model.save_pretrained(out_dir)
    proc.save_pretrained(out_dir)
    return out_dir


def caption_reward(model, processor, rows: list[dict], reasoner) -> float:
    """Mean reasoner reward of the captioner's greedy captions of ``rows``."""
    from paddlemix_r1.generation.text import SamplingSettings, generate_chat
    from paddlemix_r1.rewards.reasoner import make_reasoner_reward
    from paddlemix_r1.tasks.captioner import CaptionerTask

    task = CaptionerTask()
    captions = generate_chat(model, processor, [task.conversation(r) for r in rows],
                             SamplingSettings(max_new_tokens=16, do_sample=False), batch_size=16,
                             images=[r["images"] for r in rows])
    scores = make_reasoner_reward(reasoner)([c[0] for c in captions], problem=[r["problem"] for r in rows],
                                            question=[r["question"] for r in rows],
                                            solution=[r["solution"] for r in rows])
    return float(np.mean(scores))


def run_racro_demo(output_dir: str, settings: RacroDemoSettings | None = None) -> dict:
    import paddle

    from paddlemix_r1.grpo.config import GRPOConfig
    from paddlemix_r1.grpo.sft import run_sft
    from paddlemix_r1.grpo.trainer import GRPOTrainer
    from paddlemix_r1.models import from_pretrained
    from paddlemix_r1.processing import Processor
    from paddlemix_r1.rewards.reasoner import InProcessReasoner, ReasonerConfig, set_default_reasoner
    from paddlemix_r1.tasks.captioner import CaptionerTask

    s = settings or RacroDemoSettings()
    t_start = time.perf_counter()
    os.makedirs(output_dir, exist_ok=True)
    paddle.seed(s.seed)

    print(f"[racro demo] SFT of the tiny text reasoner, {s.reasoner_steps} steps (caption with a count -> \\boxed{{count}})")
    reasoner_dir = train_reasoner(os.path.join(output_dir, "reasoner"), s.reasoner_steps, s.seed, s.reasoner_hidden)
    config = ReasonerConfig(model_path=reasoner_dir, num_samples=1, temperature=s.reasoner_temperature,
                            max_tokens=12, batch_size=64, seed=s.seed)
    reasoner = InProcessReasoner.load(config)
    probe = [{"problem": QUESTION, "question": f"<image>{QUESTION}", "solution": str(k)} for k in range(1, 4)]
    from paddlemix_r1.rewards.reasoner import make_reasoner_reward

    reasoner_acc = float(np.mean(make_reasoner_reward(reasoner)(
        [caption_of(k) for k in range(1, 4)], problem=[p["problem"] for p in probe],
        question=[p["question"] for p in probe], solution=[p["solution"] for p in probe])))
    print(f"[racro demo] reasoner accuracy on captions that state the count: {reasoner_acc:.2f}")

    base = build_demo_model(output_dir, s.seed, s.image)
    train, test = _rows(s.train_rows, s.seed + 1, s.image), _rows(s.test_rows, s.seed + 2, s.image)
    print(f"[racro demo] captioner warm-up, {s.captioner_sft_steps} steps (caption format, random counts)")
    proc, model = Processor.from_pretrained(base), from_pretrained(base)
    task = CaptionerTask()
    run_sft(model, proc, train, task.conversation,
            lambda r, rng: caption_of(int(rng.integers(1, MAX_COUNT + 1))),
            steps=s.captioner_sft_steps, batch_size=8, learning_rate=3e-3, seed=s.seed)
    sft_dir = os.path.join(output_dir, "captioner-sft")
    model.save_pretrained(sft_dir)
    proc.save_pretrained(sft_dir)
    before = caption_reward(model, proc, test, reasoner)
    print(f"[racro demo] caption reward before GRPO: {before:.3f}")
    del model

    print(f"[racro demo] GRPO, {s.grpo_steps} steps x {s.prompts_per_step} pictures x {s.num_generations} captions")
    grpo_dir = os.path.join(output_dir, "grpo")
    # The trainer loads its own frozen copy of the reasoner from these fields, as a training run does.
    cfg = GRPOConfig(model_name_or_path=sft_dir, output_dir=grpo_dir, task="captioner", reward_funcs=["reasoner"],
                     reasoner_model_path=reasoner_dir, reasoner_temperature=s.reasoner_temperature,
                     reasoner_max_tokens=12, reasoner_batch_size=64, reasoner_seed=s.seed, beta=s.beta, num_generations=s.num_generations, prompts_per_step=s.prompts_per_step,
                     max_completion_length=16, learning_rate=s.learning_rate, max_steps=s.grpo_steps, save_steps=0,
                     save_total_limit=1, seed=s.seed, log_completions_steps=10, progress_bar=False)
    try:
        trainer = GRPOTrainer(cfg, dataset=train)
        t_grpo = time.perf_counter()
        history = trainer.train()
        grpo_seconds = time.perf_counter() - t_grpo
        reasoner_seconds = trainer.reasoner.stats()["generation_seconds"]
        after = caption_reward(trainer.model, proc, test, reasoner)
    finally:
        set_default_reasoner(None)
    curve = [h["reward"] for h in history]
    plot_curve(curve, os.path.join(output_dir, "reward_curve.png"), "GRPO mean reasoner reward of the captions")
    summary = {"reasoner_accuracy_on_count_captions": reasoner_acc, "before": before, "after": after,
               "reward_curve": curve, "grpo_seconds": round(grpo_seconds, 1),
               "reasoner_generation_seconds": round(reasoner_seconds, 1), "reasoner_stats": trainer.reasoner.stats(),
               "seconds": round(time.perf_counter() - t_start, 1), "settings": asdict(s)}
    atomic.write_json(os.path.join(output_dir, "summary.json"), summary)
    print(f"\n caption reward (held-out pictures, greedy captions): before {before:.3f} -> after {after:.3f}")
    print(f"[racro demo] {summary['seconds']} s (GRPO {summary['grpo_seconds']} s, of which the reasoner "
          f"{summary['reasoner_generation_seconds']} s); summary in {os.path.join(output_dir, 'summary.json')}")
    return summary
