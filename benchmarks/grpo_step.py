"""Seconds per GRPO step: our trainer (Paddle) vs TRL's GRPOTrainer (torch), same tiny Qwen2-VL
checkpoint, same images and prompts, same B prompts x G completions, on CPU, in one run.

    python benchmarks/grpo_step.py [--B 2] [--G 8] [--T 64] [--steps 4] [--image 224] [--heads 2]

The model is tiny_config's Qwen2-VL at hidden 256 x 4 layers (16 heads of 16 dims); ``--heads 2``
rebuilds it with 2 heads of 128 dims, the published models' head size.

Both sides: beta 0.04 (a reference model is loaded and scored), loss_type "grpo", temperature 1.0,
one generation per optimizer step (no old log-probs), one micro-batch of B*G completions, lr 1e-6,
fp32, no gradient checkpointing (TRL's default turns it on; ``--gradient_checkpointing`` turns it on
for both). Every completion runs the full T tokens on both sides (TRL: ``min_new_tokens``; ours:
no eos id given to the rollout), so the work is the same; ``--natural_eos`` lets both stop at eos.
The reward is the completion's length in characters, a placeholder that only keeps advantages
non-zero. A step is the wall time between the ends of consecutive optimizer steps (data loading,
rollout, rewards, reference log-probs, update, logging); one warm-up step is dropped.

Each side runs in its own subprocess with the same thread count (Paddle also gets MKL_DEBUG_CPU_TYPE=5 on AMD
CPUs, DESIGN.md §6), ``--rounds`` times in alternation (TRL, ours, TRL, ...; the steps of all rounds are pooled per
side), so that a slow spell of the host (here: GEMM rates halving for minutes) hits both; the checkpoint and the PNG images are built once by a
``--side make`` subprocess. torch and TRL are never imported in the Paddle process.
Each side's line ends with how many cores other processes kept busy meanwhile: on a shared machine
torch's step time grows several-fold while another process holds a core, so trust runs near 0.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def make(args, work: str) -> None:
    """Tiny checkpoint in work/ckpt, counting images as PNG and rows.json (full prompt text per row)."""
    sys.path.insert(0, REPO)
    from paddlemix_r1.data.synthetic import counting_rows
    from paddlemix_r1.models import build_tiny_checkpoint
    from paddlemix_r1.tasks import get_task

    ckpt = os.path.join(work, "ckpt")
    build_tiny_checkpoint(
        ckpt,
        family="qwen2_vl",
        seed=0,
        min_pixels=56 * 56,
        max_pixels=args.image * args.image,
        hidden=args.hidden,
        layers=args.layers,
        vision_dim=args.vision_dim,
        vision_depth=args.vision_depth,
    )
    if args.heads:  # tiny_config fixes head_dim at 16; rebuild the weights with wider heads
        from paddlemix_r1.models import MODEL_CLASSES
        from paddlemix_r1.models.config import ModelConfig

        with open(os.path.join(ckpt, "config.json")) as f:
            d = json.load(f)
        q = args.hidden // args.heads // 2  # rotary frequencies per head, split t/h/w as Qwen's [16, 24, 24]
        d.update(
            num_attention_heads=args.heads,
            num_key_value_heads=max(1, args.heads // 2),
            rope_scaling={"type": "mrope", "mrope_section": [q - 2 * (3 * q // 8), 3 * q // 8, 3 * q // 8]},
        )
        model = MODEL_CLASSES["qwen2_vl"](ModelConfig.from_dict(d))
        model.init_weights(std=0.02, seed=0)
        model.save_pretrained(ckpt)
    side = args.image // 4
    rows = []
    for i, row in enumerate(counting_rows(args.rows, seed=0, size=(args.image, args.image), side=side)):
        path = os.path.join(work, f"image_{i}.png")
        row["images"][0].save(path)
        rows.append(
            {
                "id": row["id"],
                "image": path,
                "solution": row["solution"],
                "prompt": get_task("counting").prompt(row),  # the training prompt
            }
        )
    with open(os.path.join(work, "rows.json"), "w") as f:
        json.dump(rows, f)


def load_rows(work: str) -> list[dict]:
    with open(os.path.join(work, "rows.json")) as f:
        return json.load(f)


def step_seconds(ends: list[float], expected: int) -> list[float]:
    """Per-step times from the end timestamps of warm-up + measured steps (the warm-up is dropped)."""
    if len(ends) != expected:
        raise RuntimeError(f"timed {len(ends)} optimizer steps, expected {expected}")
    return [b - a for a, b in itertools.pairwise(ends)]


def run_trl(args, work: str) -> dict:
    import datasets
    import torch
    import transformers
    from PIL import Image
    from transformers import AutoTokenizer, TrainerCallback
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil,
    )
    from trl import GRPOConfig, GRPOTrainer

    torch.set_num_threads(args.threads)
    ckpt = os.path.join(work, "ckpt")

    class ImageOnlyProcessor(transformers.Qwen2VLProcessor):
        """Without torchvision transformers 5 cannot build the video processor; drop that argument."""

        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            super().__init__(
                image_processor=image_processor, tokenizer=tokenizer, chat_template=chat_template, **kwargs
            )

    with open(os.path.join(ckpt, "preprocessor_config.json")) as f:
        pre = {k: v for k, v in json.load(f).items() if k not in ("image_processor_type", "processor_class")}
    with open(os.path.join(ckpt, "chat_template.json")) as f:
        template = json.load(f)["chat_template"]
    processor = ImageOnlyProcessor(
        image_processor=Qwen2VLImageProcessorPil(**pre),
        tokenizer=AutoTokenizer.from_pretrained(ckpt),
        chat_template=template,
    )
    model = transformers.Qwen2VLForConditionalGeneration.from_pretrained(ckpt, dtype=torch.float32)

    rows = load_rows(work)
    dataset = datasets.Dataset.from_dict(
        {
            "prompt": [[{"role": "user", "content": r["prompt"]}] for r in rows],  # TRL inserts the image part first
            "image": [Image.open(r["image"]).convert("RGB") for r in rows],
            "solution": [r["solution"] for r in rows],
        }
    )

    def length_reward(completions, **_):
        return [len(c[0]["content"]) / 100.0 for c in completions]

    ends: list[float] = []

    class StepClock(TrainerCallback):
        def on_step_end(self, *_, **__):
            ends.append(time.perf_counter())

    n = args.B * args.G
    config = GRPOConfig(
        output_dir=os.path.join(work, "trl_out"),
        per_device_train_batch_size=n,
        gradient_accumulation_steps=1,
        steps_per_generation=1,
        num_generations=args.G,
        max_completion_length=args.T,
        use_vllm=False,
        use_cpu=True,
        bf16=False,
        fp16=False,
        beta=0.04,
        loss_type="grpo",
        temperature=1.0,
        learning_rate=1e-6,
        lr_scheduler_type="constant",
        max_steps=args.steps + 1,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=0,
        dataloader_num_workers=0,
        activation_checkpointing=args.gradient_checkpointing,
        generation_kwargs=None if args.natural_eos else {"min_new_tokens": args.T},
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[length_reward],
        args=config,
        train_dataset=dataset,
        processing_class=processor,
        callbacks=[StepClock()],
    )
    trainer.train()
    lengths = [h["completions/mean_length"] for h in trainer.state.log_history if "completions/mean_length" in h]
    return {"steps": step_seconds(ends, args.steps + 1), "tokens": [m * n for m in lengths[1:]]}


def run_ours(args, work: str) -> dict:
    sys.path.insert(0, REPO)
    from PIL import Image

    import paddlemix_r1

    paddlemix_r1.configure_runtime()  # CPU runtime settings, before paddle is imported
    from paddlemix_r1.grpo.config import GRPOConfig
    from paddlemix_r1.grpo.trainer import GRPOTrainer
    from paddlemix_r1.rewards import register_reward

    register_reward("bench_length", lambda completions, **_: [len(c) / 100.0 for c in completions], overwrite=True)
    rows = [
        {
            "id": r["id"],
            "images": [Image.open(r["image"]).convert("RGB")],
            "problem": r["prompt"],
            "solution": r["solution"],
            "task": "counting",
        }
        for r in load_rows(work)
    ]
    cfg = GRPOConfig(
        model_name_or_path=os.path.join(work, "ckpt"),
        prompts_per_step=args.B,
        num_generations=args.G,
        max_completion_length=args.T,
        prompt_template="{Question}",
        beta=0.04,
        loss_type="grpo",
        temperature=1.0,
        learning_rate=1e-6,
        max_steps=args.steps + 1,
        reward_funcs=["bench_length"],
        visualdl=False,
        progress_bar=False,
        log_completions_steps=0,
        save_steps=0,
        output_dir=os.path.join(work, "ours_out"),
        gradient_checkpointing=args.gradient_checkpointing,
        seed=0,
    )
    trainer = GRPOTrainer(cfg, dataset=rows)
    if not args.natural_eos:
        # The rollout stops rows at processor.eos_token_id; without one every row decodes T tokens.
        trainer.processor.__class__ = type("NoEosProcessor", (type(trainer.processor),), {"eos_token_id": None})

    ends: list[float] = []
    train_step = trainer.train_step

    def clocked_step(micro):
        out = train_step(micro)
        ends.append(time.perf_counter())
        return out

    trainer.train_step = clocked_step
    history = trainer.train()  # ends with a checkpoint save, after the last timestamp
    n = args.B * args.G
    return {
        "steps": step_seconds(ends, args.steps + 1),
        "tokens": [h["completion_length/mean"] * n for h in history[1:]],
        "parts": {k: statistics.median(h[k] for h in history[1:]) for k in ("time/rollout", "time/ref_old_logprobs", "time/update")},
    }


def busy_core_seconds() -> float:
    """CPU time the whole machine has spent busy since boot, in core-seconds (Linux /proc/stat)."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:8]]  # user nice system idle iowait irq softirq
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def run_side(side: str, env: dict, work: str) -> dict:
    """One side in its own subprocess; also how much CPU other processes used meanwhile."""
    before, children = busy_core_seconds(), resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, __file__, *sys.argv[1:], "--side", side, "--work", work],
        check=False,
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - t0
    if out.returncode:
        sys.exit(f"{side} side failed:\n{out.stderr[-4000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    own = (after.ru_utime - children.ru_utime) + (after.ru_stime - children.ru_stime)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["others_cpu"] = max(0.0, busy_core_seconds() - before - own) / wall  # cores busy with other work
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--B", type=int, default=2, help="prompts per step")
    p.add_argument("--G", type=int, default=8, help="completions per prompt")
    p.add_argument("--T", type=int, default=64, help="max completion length")
    p.add_argument("--steps", type=int, default=4, help="measured steps (after one warm-up step)")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=0, help="decoder attention heads (0: tiny_config's, head_dim 16)")
    p.add_argument("--vision_dim", type=int, default=128)
    p.add_argument("--vision_depth", type=int, default=2)
    p.add_argument("--image", type=int, default=224, help="square image side in pixels (also max_pixels)")
    p.add_argument("--rows", type=int, default=16, help="distinct image/prompt rows in the dataset")
    p.add_argument("--gradient_checkpointing", action="store_true")
    p.add_argument("--natural_eos", action="store_true", help="let completions stop at eos on both sides")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--rounds", type=int, default=3,
                   help="TRL then ours, this many times in fresh processes, so that a slow spell of a shared host "
                        "hits both sides")
    p.add_argument("--side", choices=["make", "trl", "ours"], help=argparse.SUPPRESS)
    p.add_argument("--work", help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.side == "make":
        make(args, args.work)
        return
    if args.side:
        fn = run_trl if args.side == "trl" else run_ours
        print(json.dumps(fn(args, args.work)))
        return

    from _harness import cpu_header

    print(cpu_header(args.threads))
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    with tempfile.TemporaryDirectory() as work:
        subprocess.run(
            [sys.executable, __file__, *sys.argv[1:], "--side", "make", "--work", work],
            check=True,
            env=env,
            capture_output=True,
        )
        rounds = [{side: run_side(side, env, work) for side in ("trl", "ours")} for _ in range(max(1, args.rounds))]
    # per side: every round's steps pooled (the median below), the parts' medians, the busiest round's others
    res = {side: {"steps": [x for r in rounds for x in r[side]["steps"]],
                  "tokens": [x for r in rounds for x in r[side]["tokens"]],
                  "others_cpu": max(r[side]["others_cpu"] for r in rounds),
                  "round_medians": [statistics.median(r[side]["steps"]) for r in rounds],
                  **({"parts": {k: statistics.median(r[side]["parts"][k] for r in rounds) for k in rounds[0][side]["parts"]}}
                     if "parts" in rounds[0][side] else {})}
           for side in ("trl", "ours")}

    heads = args.heads or args.hidden // 16
    print(
        f"config: qwen2_vl hidden {args.hidden} x {args.layers} layers, {heads} heads of {args.hidden // heads}, "
        f"vision {args.vision_dim} x {args.vision_depth}, image {args.image}x{args.image}, B={args.B} prompts x "
        f"G={args.G}, T={args.T}, beta 0.04, loss grpo, "
        f"{'eos allowed' if args.natural_eos else 'full-length completions'}, gradient checkpointing "
        f"{'on' if args.gradient_checkpointing else 'off'}, {args.threads} threads, {args.steps} steps after 1 warm-up"
    )
    for side, name in (("trl", "TRL GRPOTrainer (torch CPU)"), ("ours", "paddlemix_r1 GRPOTrainer (paddle CPU)")):
        s, tok = res[side]["steps"], res[side]["tokens"]
        print(
            f"{name}: {statistics.median(s):.2f} s/step (median; mean {statistics.mean(s):.2f}, min {min(s):.2f}, "
            f"max {max(s):.2f}), {statistics.mean(tok):.0f} completion tokens/step; other processes kept "
            f"{res[side]['others_cpu']:.1f} cores busy; per round {[round(x, 2) for x in res[side]['round_medians']]}"
        )
        if "parts" in res[side]:
            print("  of which (medians): " + ", ".join(f"{k[5:]} {v:.2f} s" for k, v in res[side]["parts"].items()))
    ratio = statistics.median(res["trl"]["steps"]) / statistics.median(res["ours"]["steps"])
    per_round = [t / o for t, o in zip(res["trl"]["round_medians"], res["ours"]["round_medians"])]
    print(f"speed-up ours vs TRL (TRL s/step / ours s/step, all rounds' steps): {ratio:.2f}x (target >= 2); "
          f"per round {[round(x, 2) for x in per_round]}")


if __name__ == "__main__":
    main()
