"""Self-evolution preference data (VisRL's ``data_gen/generate.py`` + ``filter.py``): ``paddlemix-r1 visrl-generate``.

Per VQA item: ``attempts`` (K, VisRL: 3) x 2 trajectories sampled at a high temperature (VisRL: 2).
The second trajectory of each attempt obeys the diversity rule: if its box overlaps the first's with
IoU > ``diversity_iou`` (0.05) it is replaced by a random box of about the same size that does not
overlap it (``focus.boxes.diverse_box``; if none is found in 100 tries the attempt is dropped). Turn 2
then runs once per kept trajectory, all of a batch's items together (VisRL's generator called its
per-trajectory function twice and kept the second, re-sampled result; here each trajectory is sampled
exactly once). Each trajectory gets an answer score and a crop-relevance score (``focus.judges``).

Filter per item (``select_pair``, VisRL's thresholds): trajectories with a missing score are dropped;
the item is kept only if max(answer) >= 0.8, min(answer) <= 0.2 and max != min; chosen = the first
trajectory with answer == max and crop >= 0.8, rejected = the first with answer == min and crop <= 0.2.

Input: Visual-CoT rows (``read_viscot``). Output: a JSON list of VisRL's records::

    {"images": [full image path], "conversations": [{"from": "human", "value": "<image>\\n" + prompt}],
     "chosen_step": {"from": "gpt", "value": "[x1, y1, x2, y2]"}, "rejected_step": {...},
     "chosen": {"from": "gpt", "value": answer}, "rejected": {...}}

with boxes in the FOCUS frame (0..1 of the original image's width and height: the frame VisRL's
generator crops with), and ``<output>.trajectories.jsonl`` with every trajectory and its scores.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from paddlemix_r1 import atomic
from paddlemix_r1.focus import config as config_io
from paddlemix_r1.focus.boxes import (
    MIN_CROP_SIDE,
    FocusBox,
    check_focus_box,
    crop_image,
    diverse_box,
    format_focus_box,
    parse_focus_box,
)
from paddlemix_r1.focus.judges import AnswerCase, CropCase, EndpointJudge, Judge, RuleJudge
from paddlemix_r1.focus.trajectory import BOX_INSTRUCTION, TRAJECTORY_INSTRUCTION, generate_answers, generate_boxes
from paddlemix_r1.processing.image_processor import load_image
from paddlemix_r1.rewards.coords import box_iou, original_to_focus, viscot_to_focus
from paddlemix_r1.rewards.parsing import parse_box

HIGH, LOW = 0.8, 0.2
_PIXEL_BOX = re.compile(r"###\s*(\[.*\])\s*$")


@dataclass
class GenerateConfig:
    model_path: str = ""
    """Checkpoint that samples the trajectories (the current policy)."""
    data_files: list[str] = field(default_factory=list)
    """Visual-CoT JSON (a list of rows) or JSONL files."""
    image_root: str = ""
    """Folder relative image paths are resolved against."""
    output: str = "outputs/visrl/pairs.json"
    max_items: int | None = None
    attempts: int = 3
    """K: attempts per item, each 2 trajectories (VisRL: 3)."""
    temperature: float = 2.0
    """VisRL samples both turns at temperature 2."""
    top_p: float | None = None
    top_k: int | None = None
    max_box_tokens: int = 48
    max_answer_tokens: int = 128
    diversity_iou: float = 0.05
    diversity_tries: int = 100
    layout: str = "visrl"
    """Turn 2's prompt layout (focus.trajectory.LAYOUTS)."""
    min_crop_side: int = MIN_CROP_SIDE
    judge: str = "rule"
    """rule (exact-match answers, evidence-box coverage crops) | endpoint (VisRL's judge prompts)."""
    judge_url: str | None = None
    judge_model: str = "qwen2-vl-7b-instruct"
    judge_api_key_env: str | None = None
    judge_timeout_s: float = 60.0
    high: float = HIGH
    low: float = LOW
    batch_size: int = 4
    """Items per generate call."""
    max_prompt_length: int | None = None
    min_pixels: int | None = None
    max_pixels: int | None = None
    seed: int = 0
    dtype: str = "float32"

    @classmethod
    def load(cls, path: str | None, overrides: list[str] | dict[str, Any] | None = None) -> GenerateConfig:
        return config_io.load(cls, path, overrides)


# ---- Visual-CoT rows -----------------------------------------------------------------------------


def _strip_instruction(text: str) -> str:
    text = text.replace("<image>", "").strip()
    for instruction in (BOX_INSTRUCTION, TRAJECTORY_INSTRUCTION):
        text = text.replace(instruction, "")
    return text.strip()


def viscot_item(row: Any, where: str, image_root: str) -> dict[str, Any]:
    """One Visual-CoT row -> {id, image, question, answer, evidence (FOCUS box or None), dataset}.

    ``image`` is a path or ``[path, "path###[x1, y1, x2, y2]"]`` (pixel box); ``conversations`` the 4-turn
    form (human question + box request, gpt box in the padded-square frame, human "<image>", gpt answer) or
    VisRL's 2-turn RL form (first human, last gpt). The evidence box comes from the ``###`` pixel box, else
    from the gpt box turn (converted from Visual-CoT's padded-square frame)."""
    if not isinstance(row, dict):
        raise ValueError(f"{where}: a row must be an object, got {type(row).__name__}")
    image = row.get("image", row.get("images"))
    pixel_box = None
    if isinstance(image, list):
        if not image or not isinstance(image[0], str):
            raise ValueError(f"{where}: field 'image' must be a path or [path, 'path###[box]'], got {image!r}")
        for extra in image[1:]:
            m = _PIXEL_BOX.search(extra) if isinstance(extra, str) else None
            if m:
                pixel_box = json.loads(m.group(1))
        image = image[0]
    if not isinstance(image, str) or not image:
        raise ValueError(f"{where}: field 'image' must be a path, got {image!r}")
    path = image if os.path.isabs(image) else os.path.join(image_root, image)
    if not os.path.isfile(path):
        raise ValueError(f"{where}: field 'image': file not found: {path}")
    conv = row.get("conversations")
    if not isinstance(conv, list) or len(conv) < 2 or not all(isinstance(c, dict) and "value" in c for c in conv):
        raise ValueError(f"{where}: field 'conversations' must be a list of >= 2 {{from, value}} turns")
    if conv[0].get("from") != "human" or conv[-1].get("from") != "gpt":
        raise ValueError(f"{where}: field 'conversations' must start with a human turn and end with a gpt turn")
    question = _strip_instruction(str(conv[0]["value"]))
    answer = str(conv[-1]["value"]).strip()
    size = load_image(path).size
    evidence = None
    if pixel_box is not None:
        evidence = original_to_focus(pixel_box, size)
    elif len(conv) >= 4:
        box = parse_box(str(conv[1]["value"]))
        if box is not None:
            evidence = viscot_to_focus(box, size)
    if not question or not answer:
        raise ValueError(f"{where}: empty question or answer")
    return {"id": row.get("question_id", where), "image": path, "question": question, "answer": answer,
            "evidence": evidence, "dataset": row.get("dataset")}


def read_viscot(paths: Sequence[str], image_root: str = "", max_items: int | None = None) -> list[dict[str, Any]]:
    """Items of Visual-CoT JSON (list) or JSONL files (``viscot_item``), ``<file>:<index>`` in errors."""
    items = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        if text.lstrip().startswith("["):
            rows = [(f"{path}:{i}", r) for i, r in enumerate(json.loads(text))]
        else:
            rows = [(f"{path}:{i + 1}", json.loads(line)) for i, line in enumerate(text.splitlines()) if line.strip()]
        for where, row in rows:
            items.append(viscot_item(row, where, image_root))
            if max_items is not None and len(items) >= max_items:
                return items
    if not items:
        raise ValueError(f"no Visual-CoT rows in {list(paths)}")
    return items


# ---- the filter -----------------------------------------------------------------------------------


def select_pair(trajectories: Sequence[dict[str, Any]], high: float = HIGH, low: float = LOW
                ) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """VisRL's filter over one item's trajectories (each with ``acc`` and ``crop`` scores; None = failed)."""
    scored = [t for t in trajectories if t.get("acc") is not None and t.get("crop") is not None]
    if not scored:
        return None
    accs = [t["acc"] for t in scored]
    best, worst = max(accs), min(accs)
    if not (best >= high and worst <= low and best != worst):
        return None
    chosen = next((t for t in scored if t["acc"] == best and t["crop"] >= high), None)
    rejected = next((t for t in scored if t["acc"] == worst and t["crop"] <= low), None)
    if chosen is None or rejected is None:
        return None
    return chosen, rejected


def pair_record(item: dict[str, Any], chosen: dict[str, Any], rejected: dict[str, Any]) -> dict[str, Any]:
    """VisRL's record (module docstring)."""
    return {
        "images": [item["image"]],
        "conversations": [{"from": "human", "value": "<image>\n" + item["question"] + " " + TRAJECTORY_INSTRUCTION}],
        "chosen_step": {"from": "gpt", "value": chosen["box_text"]},
        "rejected_step": {"from": "gpt", "value": rejected["box_text"]},
        "chosen": {"from": "gpt", "value": chosen["answer"]},
        "rejected": {"from": "gpt", "value": rejected["answer"]},
    }


# ---- generation -----------------------------------------------------------------------------------


def _second_box(first: FocusBox, second: FocusBox, text: str, cfg: GenerateConfig, rng: np.random.Generator,
                size: tuple[int, int]) -> tuple[FocusBox, str] | None:
    """The diversity rule for an attempt's second trajectory; None drops the attempt."""
    if not (first.ok and second.ok) or box_iou(second.focus, first.focus) <= cfg.diversity_iou:
        return second, text
    box = diverse_box(first.focus, rng, cfg.diversity_tries)
    if box is None:
        return None
    text = format_focus_box(box)
    return check_focus_box(box, size, cfg.min_crop_side), text


def sample_items(model, processor, items: Sequence[dict[str, Any]], cfg: GenerateConfig, judge: Judge, seed: int
                 ) -> tuple[list[list[dict[str, Any]]], int]:
    """All trajectories of ``items`` (K attempts x 2 each), scored; returns them per item and the number of
    generated tokens."""
    k, rng = cfg.attempts, np.random.default_rng(seed)
    sampling = dict(do_sample=True, temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k,
                    max_prompt_length=cfg.max_prompt_length)
    originals = [load_image(it["image"]) for it in items]
    turn1 = generate_boxes(model, processor, [it["question"] for it in items], originals, 2 * k, cfg.max_box_tokens,
                           seed, **sampling)
    per_item: list[list[dict[str, Any]]] = []
    for p, it in enumerate(items):
        size = originals[p].size
        texts = turn1.texts[p * 2 * k:(p + 1) * 2 * k]  # [first of attempts 0..K-1, second of attempts 0..K-1]
        boxes = [parse_focus_box(t, size, cfg.min_crop_side) for t in texts]
        trajs = []
        for a in range(k):
            second = _second_box(boxes[a], boxes[k + a], texts[k + a], cfg, rng, size)
            if second is None:
                continue  # VisRL drops an attempt whose second box cannot be made diverse
            for j, (box, text) in enumerate([(boxes[a], texts[a]), second]):
                trajs.append({"item": p, "attempt": a, "trajectory": j, "box_text": text.strip(), "status": box.status,
                              "box": list(box.focus) if box.ok else None, "_box": box, "answer": None, "acc": None,
                              "crop": None})
        per_item.append(trajs)
    usable = [t for trajs in per_item for t in trajs if t["_box"].ok]
    tokens = turn1.num_tokens
    if usable:
        crops = [crop_image(originals[t["item"]], t["_box"]) for t in usable]
        turn2 = generate_answers(model, processor, [items[t["item"]]["question"] for t in usable],
                                 [originals[t["item"]] for t in usable], [t["box_text"] for t in usable], crops,
                                 cfg.max_answer_tokens, seed + 1, layout=cfg.layout, **sampling)
        tokens += turn2.num_tokens
        for t, answer in zip(usable, turn2.texts):
            t["answer"] = answer.strip()
        accs = judge.score_answers([AnswerCase(items[t["item"]]["question"], items[t["item"]]["answer"], t["answer"],
                                               originals[t["item"]], tuple(t["box"])) for t in usable])
        crop_scores = judge.score_crops([CropCase(items[t["item"]]["question"], items[t["item"]]["answer"], c,
                                                  tuple(t["box"]), items[t["item"]]["evidence"],
                                                  str(items[t["item"]]["id"])) for t, c in zip(usable, crops)])
        for t, acc, crop in zip(usable, accs, crop_scores):
            t["acc"], t["crop"] = acc, crop
    for trajs in per_item:
        for t in trajs:
            t.pop("_box")
    return per_item, tokens


def build_judge(cfg: GenerateConfig) -> Judge:
    if cfg.judge == "rule":
        return RuleJudge()
    if cfg.judge == "endpoint":
        from paddlemix_r1.rewards.llm_judge import JudgeConfig

        if not cfg.judge_url:
            raise ValueError("judge=endpoint needs judge_url (an OpenAI-compatible base, e.g. http://127.0.0.1:8000/v1)")
        key = os.environ.get(cfg.judge_api_key_env) if cfg.judge_api_key_env else None
        return EndpointJudge(JudgeConfig(base_url=cfg.judge_url, model=cfg.judge_model, api_key=key,
                                         timeout_s=cfg.judge_timeout_s, max_workers=1))
    raise ValueError(f"judge must be 'rule' or 'endpoint', got {cfg.judge!r}")


@dataclass
class GenerateResult:
    records: list[dict[str, Any]]
    items: int
    trajectories: int
    generated_tokens: int
    output: str


def run_generate(cfg: GenerateConfig, items: Sequence[dict[str, Any]] | None = None, model=None, processor=None,
                 judge: Judge | None = None) -> GenerateResult:
    """Sample, judge and filter ``items`` (default: ``read_viscot(cfg.data_files)``); write the records."""
    if cfg.attempts < 1 or cfg.batch_size < 1:
        raise ValueError(f"attempts and batch_size must be >= 1, got {cfg.attempts} and {cfg.batch_size}")
    if model is None or processor is None:
        from paddlemix_r1.models import from_pretrained
        from paddlemix_r1.processing import Processor

        processor = Processor.from_pretrained(cfg.model_path, min_pixels=cfg.min_pixels, max_pixels=cfg.max_pixels)
        model = from_pretrained(cfg.model_path, dtype=cfg.dtype)
    items = list(items) if items is not None else read_viscot(cfg.data_files, cfg.image_root, cfg.max_items)
    judge = judge if judge is not None else build_judge(cfg)
    records, all_trajs, tokens = [], [], 0
    for start in range(0, len(items), cfg.batch_size):
        batch = items[start:start + cfg.batch_size]
        per_item, n = sample_items(model, processor, batch, cfg, judge, cfg.seed * 1_000_003 + start)
        tokens += n
        for it, trajs in zip(batch, per_item):
            pair = select_pair(trajs, cfg.high, cfg.low)
            if pair is not None:
                records.append(pair_record(it, *pair))
            all_trajs.extend({**t, "item": str(it["id"])} for t in trajs)
    atomic.write_jsonl(cfg.output + ".trajectories.jsonl", all_trajs)
    atomic.write_json(cfg.output, records, indent=1)
    return GenerateResult(records, len(items), len(all_trajs), tokens, cfg.output)
