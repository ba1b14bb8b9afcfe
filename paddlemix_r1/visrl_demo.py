"""The CPU demo of focus-region reasoning (VisRL): ``paddlemix-r1 demo --recipe visrl``.

The synthetic task: a 448 x 448 white picture holds one 112 x 112 square in one of its four quadrants:
a 24-px solid frame around 64 x 64 px of 8-pixel black and white stripes (horizontal, vertical or
checker); the question asks for the pattern. The model sees every image at 56 x 56 (max_pixels). In the
full picture the frame is a strong blob that shows WHERE the square is (its colour, the same for every
pattern, names the quadrant: the tiny model's rotary positions barely tell its 2 x 2 full-view image
tokens apart, so the location cue is in the content), while the striped inside is a flat grey (every
pixel averages one black and one white half stripe): the pattern is not legible. The crop of the right
quadrant, seen at the same 56 x 56, shows the stripes (``striped_picture``). So the answer is legible
only through a good box. The frame colours (black, cyan, magenta, yellow) differ pairwise in two of the
three channels: with red / green / blue / orange frames the warm-up's vision tower stopped telling green
from orange (they differ mostly in red) and no learner could box those two quadrants apart. There are
3 patterns x 4 quadrants x 4 places = 48 distinct pictures, so test draws repeat training pictures: the
figures measure learning the task, not generalising to unseen pictures.

1. a tiny random Qwen2.5-VL; train / test pictures;
2. supervised warm-up WITH boxes (VisRL's SFT stage) from an imperfect annotator: first the answer turn
   alone under the right quadrant's crop (after it the answer under the right crop is right), then both
   turns, where the box annotations of top-row squares name the mirrored quadrant (left and right swapped)
   3 times in 4 (``sft_box_mirrored``). The warm-up model then boxes the bottom row right and, greedily,
   the top row wrong, while its samples find the right top box about a quarter of the time -> "before";
3. offline: ``visrl-generate`` on the training pictures (K attempts x 2 trajectories, diversity rule,
   rule judges, VisRL's filter) -> pairs -> stage-1 DPO (box step; LoRA r8 / alpha 16, sigmoid, beta 0.1,
   plus the chosen box's token NLL: TRL's ``sft`` loss type) -> stage-2 DPO (0.5 box + 0.5 answer, at a
   lower learning rate) -> accuracy;
4. online: GRPO over the same two-turn trajectories from the same warm-up model, reward = answer
   correctness + 0.2 x box validity -> accuracy at the DPO run's generated-token budget and at the end.

Neither learner trains on box annotations: GRPO's reward is the answer judge's (+ box validity); the
offline filter adds VisRL's crop-relevance judge, here the crop's coverage of the square (VisRL asks a
judge model whether the crop is relevant). Accuracy is greedy two-turn decoding on the test pictures; "box
hit" is the fraction of test boxes holding the whole striped square with a crop no larger than a quadrant (a
whole-picture box holds the square too, but its crop shows the stripes as grey). Figures for seeds 0-3:
docs/visrl.md.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

from paddlemix_r1 import atomic
from paddlemix_r1.focus.boxes import format_focus_box

PATTERNS = ("horizontal", "vertical", "checker")
QUESTION = "What is the pattern of the grey square?"
CANVAS, MARK, STRIPE, VIEW, SLOTS, FRAME = 448, 112, 8, 56, 2, 24
FRAME_COLORS = ((0, 0, 0), (0, 200, 200), (200, 0, 200), (220, 220, 0))
QUADRANTS = [(0.0, 0.0, 0.5, 0.5), (0.5, 0.0, 1.0, 0.5), (0.0, 0.5, 0.5, 1.0), (0.5, 0.5, 1.0, 1.0)]


@dataclass
class VisrlDemoSettings:
    train_rows: int = 192
    test_rows: int = 96
    sft_read_steps: int = 300
    """Warm-up steps on the answer turn alone (true crop, true pattern): after them the answer under the
    right crop is right for every test picture (seeds 0 and 1: 1.000)."""
    sft_steps: int = 800
    """Then steps on both turns: the answer under the right crop, and the box turn on the annotator's box
    (``sft_box_mirrored``). 600-800 steps bring the box to where its annotations lead (sampled boxes of the
    bottom row: 0.89-0.92 right; of the top row: 0.20-0.30)."""
    sft_box_repeat: int = 3
    """Box examples are this many times as frequent as answer examples in those steps."""
    sft_learning_rate: float = 5e-4
    """At 1e-3 the both-turn steps stop making usable boxes at some seeds (seed 1: none at step 400)."""
    sft_box_mirrored: float = 0.75
    """The warm-up's box annotator: for a square in the TOP row it names the other top quadrant (left and
    right swapped) this often; for the bottom row it is always right. So the warm-up model learns a wrong
    box for the top row as its most likely one (greedy), while sampling still finds the right one about a
    quarter of the time: that is what the answer judge can reward."""
    attempts: int = 4
    """K attempts x 2 trajectories per training picture in the self-generated data."""
    gen_temperature: float = 1.0
    """VisRL samples at 2; the tiny warm-up model's box text falls apart above 1."""
    dpo_stage1_steps: int = 200
    dpo_stage2_steps: int = 30
    dpo_learning_rate: float = 3e-4
    """Stage 1 (VisRL: 5e-6 on a 7B model), cosine over ``dpo_stage1_steps`` (100 steps fixed one of the two
    mirrored quadrants at seeds 0 and 2, 200 both)."""
    dpo_stage2_learning_rate: float = 5e-5
    """Stage 2 starts from the stage-1 model with the same pairs: at 1e-4 its box step pushes the box texts
    apart again until some stop parsing."""
    dpo_batch: int = 8
    dpo_beta: float = 0.1
    dpo_lora: bool = True
    dpo_loss: str = "sigmoid"
    dpo_sft_weight: float = 1.0
    """+ this x the chosen texts' token NLL (TRL's ``sft`` loss type, RPO's alpha). 0 (plain sigmoid DPO,
    200 steps): accuracy 1.000 / 0.677 / 0.844 / 0.198 at seeds 0-3, against 0.969 / 0.875 / 1.000 / 0.938."""
    grpo_steps: int = 160
    grpo_prompts: int = 4
    grpo_generations: int = 8
    grpo_learning_rate: float = 1e-4
    """At 3e-4 the run peaks and falls back (seed 0: accuracy 0.84 at step 49, 0.46 at step 80)."""
    grpo_box_valid_weight: float = 0.2
    grpo_crop_weight: float = 0.0
    """Weight of the crop-relevance reward (coverage of the square, the judge the offline filter uses). 0: a
    whole-picture box covers the square as well as the right quadrant does, so this term pays for crops the
    answer cannot use; the answer reward alone tells the boxes apart."""
    grpo_beta: float = 0.04
    seed: int = 0

    @classmethod
    def smoke(cls) -> VisrlDemoSettings:
        return cls(train_rows=8, test_rows=4, sft_read_steps=2, sft_steps=2, attempts=2, dpo_stage1_steps=2,
                   dpo_stage2_steps=1, dpo_batch=2, grpo_steps=2, grpo_prompts=2, grpo_generations=2)


def striped_picture(pattern: str, quadrant: int, rng: np.random.Generator) -> tuple[Image.Image, tuple]:
    """The picture and the square's FOCUS box. The square sits at one of ``SLOTS`` x ``SLOTS`` places of its
    quadrant, on the full view's 14-px patch grid (112 picture px); its frame (``FRAME`` px, colour
    ``FRAME_COLORS[quadrant]``) is the same for every pattern, and the stripes inside start half a stripe in:
    at the full picture's 8x reduction every pixel inside the frame then averages one black and one white
    half stripe to a flat grey, while the quadrant crop's 4x reduction keeps them as crisp 2-px stripes
    (measured: full-view std 0 inside, pattern differences only along the striped area's rim, at most 25 of
    255; in the crop the striped areas of two patterns differ by 109 levels on average)."""
    half = CANVAS // 2
    a = np.full((CANVAS, CANVAS, 3), 255, np.uint8)
    step = (half - MARK) // (SLOTS - 1)
    ox = half * (quadrant % 2) + step * int(rng.integers(SLOTS))
    oy = half * (quadrant // 2) + step * int(rng.integers(SLOTS))
    a[oy:oy + MARK, ox:ox + MARK] = FRAME_COLORS[quadrant]
    inner = MARK - 2 * FRAME
    yy, xx = np.mgrid[0:inner, 0:inner] + STRIPE // 2
    cells = {"horizontal": yy // STRIPE, "vertical": xx // STRIPE, "checker": yy // STRIPE + xx // STRIPE}[pattern]
    a[oy + FRAME:oy + MARK - FRAME, ox + FRAME:ox + MARK - FRAME] = np.where(cells % 2 == 1, 0, 255)[..., None]
    box = (ox / CANVAS, oy / CANVAS, (ox + MARK) / CANVAS, (oy + MARK) / CANVAS)
    return Image.fromarray(a), box


def make_rows(n: int, seed: int, image_dir: str) -> list[dict]:
    """Rows in the focus_vqa format (images saved as PNG: the generator's records point at files)."""
    os.makedirs(image_dir, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        pattern, quadrant = PATTERNS[int(rng.integers(3))], int(rng.integers(4))
        img, box = striped_picture(pattern, quadrant, rng)
        path = os.path.join(image_dir, f"{i:04d}.png")
        img.save(path)
        rows.append({"id": f"{os.path.basename(image_dir)}/{i}", "images": [path], "problem": QUESTION,
                     "solution": pattern, "task": "focus_vqa", "evidence": list(box), "quadrant": quadrant})
    return rows


def quadrant_text(q: int) -> str:
    return format_focus_box(QUADRANTS[q], decimals=1)


def evaluate(model, processor, rows: list[dict], batch: int = 16) -> dict:
    """Greedy two-turn trajectories: answer accuracy, box hit rate, usable-box rate, generated tokens."""
    from paddlemix_r1.focus.trajectory import rollout_trajectories
    from paddlemix_r1.rewards.detection import box_area
    from paddlemix_r1.rewards.focus import answer_correct, coverage

    correct = hit = usable = tokens = 0
    quadrant = 0.25 + 1e-6
    for s in range(0, len(rows), batch):
        part = rows[s:s + batch]
        tr = rollout_trajectories(model, processor, [r["problem"] for r in part], [r["images"][0] for r in part],
                                  1, max_box_tokens=24, max_answer_tokens=8, do_sample=False)
        tokens += tr.generated_tokens
        for r, b, a in zip(part, tr.boxes, tr.answers):
            usable += b.ok
            hit += b.ok and coverage(b.focus, r["evidence"]) >= 0.999 and box_area(b.focus) <= quadrant
            correct += a is not None and answer_correct(a, r["solution"]) == 1.0
    n = len(rows)
    return {"accuracy": correct / n, "box_hit": hit / n, "usable_box": usable / n, "n": n, "eval_tokens": tokens}


def _sft_rows(rows: list[dict]) -> list[dict]:
    """Per picture: one box example (its target drawn at random when trained on) and one answer example
    under the right quadrant's crop (the true pattern)."""
    from paddlemix_r1.focus.boxes import check_focus_box, crop_image
    from paddlemix_r1.focus.trajectory import answer_conversation, box_conversation

    out = []
    for r in rows:
        full = Image.open(r["images"][0]).convert("RGB")
        q = r["quadrant"]
        crop = crop_image(full, check_focus_box(QUADRANTS[q], full.size))
        out.append({"images": [full], "conv": box_conversation(r["problem"]), "kind": "box", "quadrant": q})
        out.append({"images": [full, crop], "conv": answer_conversation(r["problem"], quadrant_text(q)),
                    "kind": "answer", "gold": r["solution"]})
    return out


def demo_data(output_dir: str, s: VisrlDemoSettings) -> tuple[str, list[dict], list[dict]]:
    """The tiny random base model and the train / test pictures of ``s.seed``."""
    from paddlemix_r1.demo import build_demo_model

    base = build_demo_model(output_dir, s.seed, VIEW)
    train = make_rows(s.train_rows, s.seed + 1, os.path.join(output_dir, "data", "train"))
    test = make_rows(s.test_rows, s.seed + 2, os.path.join(output_dir, "data", "test"))
    return base, train, test


def warm_up(model, proc, train: list[dict], s: VisrlDemoSettings) -> list[float]:
    """The supervised warm-up (module docstring, step 2); returns the loss of each step."""
    from paddlemix_r1.grpo.sft import run_sft

    def answer(r, rng):
        if r["kind"] != "box":
            return r["gold"]
        q = r["quadrant"]
        if q < 2 and rng.random() < s.sft_box_mirrored:
            q ^= 1  # the annotator's mirrored box: top-left <-> top-right
        return quadrant_text(q)

    rows = _sft_rows(train)
    answers = [r for r in rows if r["kind"] == "answer"]
    losses = run_sft(model, proc, answers, lambda r: r["conv"], answer, steps=s.sft_read_steps, batch_size=12,
                     learning_rate=s.sft_learning_rate, seed=s.seed)
    mixed = answers + s.sft_box_repeat * [r for r in rows if r["kind"] == "box"]
    losses += run_sft(model, proc, mixed, lambda r: r["conv"], answer, steps=s.sft_steps, batch_size=12,
                      learning_rate=s.sft_learning_rate, seed=s.seed + 1)
    return losses


def run_offline(s: VisrlDemoSettings, sft_dir: str, model, proc, train: list[dict], test: list[dict],
                output_dir: str) -> dict:
    """Self-generated pairs from the warm-up model, stage-1 then stage-2 DPO; the evaluation after each."""
    from paddlemix_r1.focus.selfgen import GenerateConfig, run_generate
    from paddlemix_r1.grpo.dpo_train import DPOTrainConfig, DPOTrainer, read_pairs
    from paddlemix_r1.models import from_pretrained

    t0 = time.perf_counter()
    gen = run_generate(GenerateConfig(model_path=sft_dir, output=os.path.join(output_dir, "pairs.json"),
                                      attempts=s.attempts, temperature=s.gen_temperature, max_box_tokens=24,
                                      max_answer_tokens=8, batch_size=16, seed=s.seed),
                       items=[{"id": r["id"], "image": r["images"][0], "question": r["problem"],
                               "answer": r["solution"], "evidence": tuple(r["evidence"])} for r in train],
                       model=model, processor=proc)
    print(f"[visrl demo] {len(gen.records)} pairs from {gen.items} pictures x {2 * s.attempts} trajectories "
          f"({gen.generated_tokens} generated tokens)")
    dpo = {"pairs": len(gen.records), "generated_tokens": gen.generated_tokens,
           "generate_seconds": time.perf_counter() - t0}
    start = sft_dir
    if gen.records:
        pairs = read_pairs([gen.output])
        for stage, steps, lr in ((1, s.dpo_stage1_steps, s.dpo_learning_rate),
                                 (2, s.dpo_stage2_steps, s.dpo_stage2_learning_rate)):
            if not steps:
                continue
            cfg = DPOTrainConfig(model_name_or_path=start, output_dir=os.path.join(output_dir, f"dpo-stage{stage}"),
                                 stage=stage, beta=s.dpo_beta, learning_rate=lr, max_steps=steps,
                                 per_device_batch_size=s.dpo_batch, gradient_accumulation_steps=1, save_steps=0,
                                 save_total_limit=1, seed=s.seed, logging_steps=10, use_peft=s.dpo_lora,
                                 freeze_vision=s.dpo_lora, loss_type=s.dpo_loss, sft_weight=s.dpo_sft_weight)
            trainer = DPOTrainer(cfg, pairs=pairs)
            history = trainer.train()
            start = os.path.join(cfg.output_dir, f"checkpoint-{trainer.step}", "model")
            dpo[f"stage{stage}"] = {**evaluate(from_pretrained(start), proc, test),
                                    "final_loss": history[-1]["loss"] if history else None}
            print(f"[visrl demo] after stage-{stage} DPO: accuracy {dpo[f'stage{stage}']['accuracy']:.3f}, "
                  f"box hit {dpo[f'stage{stage}']['box_hit']:.3f}")
    dpo["seconds"] = time.perf_counter() - t0
    return dpo


def run_online(s: VisrlDemoSettings, sft_dir: str, train: list[dict], test: list[dict], output_dir: str,
               token_budget: int) -> dict:
    """GRPO from the warm-up model; evaluated once its generated tokens reach ``token_budget`` and at the end."""
    from paddlemix_r1.focus.online import FocusGRPOTrainer, FocusOptions
    from paddlemix_r1.grpo.config import GRPOConfig

    t0 = time.perf_counter()
    grpo_cfg = GRPOConfig(model_name_or_path=sft_dir, output_dir=os.path.join(output_dir, "grpo"), task="focus_vqa",
                          reward_funcs=["focus_answer", "focus_box_valid", "focus_crop"],
                          reward_weights=[1.0, s.grpo_box_valid_weight, s.grpo_crop_weight], loss_type="dapo",
                          beta=s.grpo_beta, num_generations=s.grpo_generations, prompts_per_step=s.grpo_prompts,
                          max_completion_length=8, learning_rate=s.grpo_learning_rate, max_steps=s.grpo_steps,
                          save_steps=0, save_total_limit=1, seed=s.seed, log_completions_steps=0, visualdl=False,
                          progress_bar=False)
    trainer = FocusGRPOTrainer(grpo_cfg, FocusOptions(max_box_tokens=24), dataset=train)
    grpo: dict = {}
    while trainer.step < s.grpo_steps:
        trainer.train(num_steps=1)
        if "at_dpo_tokens" not in grpo and token_budget and trainer.generated_tokens >= token_budget:
            grpo["at_dpo_tokens"] = {**evaluate(trainer.model, trainer.processor, test), "step": trainer.step,
                                     "generated_tokens": trainer.generated_tokens}
            print(f"[visrl demo] GRPO at the DPO token budget (step {trainer.step}): accuracy "
                  f"{grpo['at_dpo_tokens']['accuracy']:.3f}, box hit {grpo['at_dpo_tokens']['box_hit']:.3f}")
    grpo["final"] = {**evaluate(trainer.model, trainer.processor, test), "step": trainer.step,
                     "generated_tokens": trainer.generated_tokens}
    grpo["reward_curve"] = [h["reward"] for h in trainer.history]
    grpo["seconds"] = time.perf_counter() - t0
    return grpo


def run_visrl_demo(output_dir: str, settings: VisrlDemoSettings | None = None) -> dict:
    import paddle

    from paddlemix_r1.models import from_pretrained
    from paddlemix_r1.processing import Processor

    s = settings or VisrlDemoSettings()
    t_start = time.perf_counter()
    os.makedirs(output_dir, exist_ok=True)
    paddle.seed(s.seed)
    base, train, test = demo_data(output_dir, s)
    proc = Processor.from_pretrained(base)
    model = from_pretrained(base)
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    print(f"[visrl demo] warm-up: {s.sft_read_steps} steps on the answer turn under the right crop, then "
          f"{s.sft_steps} steps on it and on the box turn (top-row boxes mirrored in {s.sft_box_mirrored:.0%} of "
          "the annotations)")
    sft_losses = warm_up(model, proc, train, s)
    sft_dir = os.path.join(output_dir, "sft-model")
    model.save_pretrained(sft_dir)
    proc.save_pretrained(sft_dir)
    before = evaluate(model, proc, test)
    timings["sft"] = time.perf_counter() - t0
    print(f"[visrl demo] warm-up model: accuracy {before['accuracy']:.3f}, box hit {before['box_hit']:.3f}")

    dpo = run_offline(s, sft_dir, model, proc, train, test, output_dir)
    timings["generate"] = dpo.pop("generate_seconds")
    timings["dpo"] = dpo.pop("seconds") - timings["generate"]
    grpo = run_online(s, sft_dir, train, test, output_dir, dpo["generated_tokens"])
    timings["grpo"] = grpo.pop("seconds")

    summary = {"before": before, "dpo": dpo, "grpo": grpo, "sft_loss": sft_losses[-5:],
               "seconds": round(time.perf_counter() - t_start, 1), "timings": {k: round(v, 1) for k, v in timings.items()},
               "settings": asdict(s)}
    atomic.write_json(os.path.join(output_dir, "summary.json"), summary)
    print(format_table(summary))
    return summary


def format_table(summary: dict) -> str:
    lines = [" model                          accuracy  box hit  generated tokens"]
    b = summary["before"]
    lines.append(f" warm-up (SFT)                  {b['accuracy']:.3f}     {b['box_hit']:.3f}    0")
    dpo = summary["dpo"]
    for stage in ("stage1", "stage2"):
        if stage in dpo:
            lines.append(f" DPO {stage.replace('stage', 'stage ')}                    {dpo[stage]['accuracy']:.3f}     "
                         f"{dpo[stage]['box_hit']:.3f}    {dpo['generated_tokens']}")
    for key, label in (("at_dpo_tokens", "GRPO at the DPO token budget"), ("final", "GRPO final")):
        if key in summary["grpo"]:
            g = summary["grpo"][key]
            lines.append(f" {label:<30} {g['accuracy']:.3f}     {g['box_hit']:.3f}    {g['generated_tokens']}"
                         f" (step {g['step']})")
    lines.append(f" [{summary['seconds']} s]")
    return "\n".join(lines)
