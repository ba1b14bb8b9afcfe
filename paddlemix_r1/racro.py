"""RACRO's inference pipeline (``paddlemix-r1 racro-eval``): perception by the VLM, reasoning by a text LLM.

Three steps (VLMEvalKit in RACRO's repository, README "Inference and Evaluation"), each writing its own
JSONL in ``output_dir`` so any step can be re-run alone, e.g. step 3 with another reasoner:

1. ``qa.jsonl``       the VLM's tentative answer (``qa_cot``): system "You are a helpful assistant.", the
                      images then the question with the VQA suffix removed; greedy.
2. ``caption.jsonl``  the VLM's query-conditioned caption (``query_cond_3``): the captioner system prompt,
                      the images then "Question: {question}\\nPlease describe the image. DO NOT try to answer
                      the question!"; greedy.
3. ``reason.jsonl``   the text reasoner's answer from caption + question + tentative answer (``joint``:
                      ``JOINT_PROMPT`` + the boxed-answer instruction), temperature 0.6, top_p 0.95;
                      in-process (``--reasoner_path``) or from an OpenAI-compatible server (``--reasoner_url``).

Accuracy: the reasoner's last ``\\boxed{}`` graded against the gold by the rule grader of the ``reasoner``
reward (string match, choice letters, math_verify). RACRO's published numbers used an LLM judge
(gpt-4o-mini for the math benchmarks), so these are not directly comparable; ``summary.json`` says so.

Rows: a ViRL39K parquet (``data/virl39k.py``) or a JSONL of ``{"id", "images": [paths], "question",
"answer"}`` (paths relative to ``image_root``).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from paddlemix_r1 import atomic
from paddlemix_r1.rewards.reasoner import (
    REASONER_SYSTEM,
    VQA_SUFFIX,
    ReasonerConfig,
    grade_boxed,
    last_boxed,
    strip_boxed,
)
from paddlemix_r1.tasks.captioner import CAPTIONER_SYSTEM, IMAGE_TAG, PROMPTS

STEPS = ("qa", "caption", "reason")
QA_SYSTEM = "You are a helpful assistant."
# VLMEvalKit vlmeval/vlm/llm_reasoner/model.py, verbatim (its spacing included: the first line ends with four
# spaces, a line of 24 spaces follows, and a line of one space precedes the last section).
JOINT_PROMPT = (
    "In the following text, you will receive a detailed caption of an image and a relevant question. In addition, "
    "you will be provided with a tentative model response. You goal is to answer the question using these "
    "information.    \n" + " " * 24 + "\n"
    "### The detailed caption of the provided image: {image_caption_batch}\n\n"
    "### Note that the caption might contain incorrect solutions, do not be misguided by them.\n\n"
    "### A problem to be solved: {problem_prompt}\n\n"
    "### A tentative model response: {qa_batch}\n \n"
    "### Note that the above tentative response might be inaccurate (due to calculation errors, incorrect "
    "logic/reasoning and so on), under such a case, please ignore it and give your own solutions. However, if you "
    "do not have enough evidence to show it is wrong, please output the tentative response."
)
JOINT_INSTRUCTION = "\n\n### Please think step by step. The final answer MUST BE put in \\boxed{}."
JUDGE_NOTE = ("accuracy by the rule grader (last \\boxed{} vs the gold: string match, choice letter, math_verify); "
              "RACRO's published numbers used an LLM judge (gpt-4o-mini), so they are not directly comparable")


def qa_conversation(question: str, n_images: int) -> list[dict]:
    text = question.replace(IMAGE_TAG, "").replace(VQA_SUFFIX, "").strip()
    return [{"role": "system", "content": QA_SYSTEM},
            {"role": "user", "content": [{"type": "image"}] * n_images + [{"type": "text", "text": text}]}]


def caption_conversation(question: str, n_images: int) -> list[dict]:
    text = PROMPTS["caption"].format({"problem": question.replace(IMAGE_TAG, "").strip()})
    return [{"role": "system", "content": CAPTIONER_SYSTEM},
            {"role": "user", "content": [{"type": "image"}] * n_images + [{"type": "text", "text": text}]}]


def joint_messages(caption: str, question: str, tentative: str) -> list[dict[str, str]]:
    """RACRO's joint reasoner prompt (evaluation; training gives the reasoner the caption and question only)."""
    user = JOINT_PROMPT.format(image_caption_batch=caption, problem_prompt=question.replace(IMAGE_TAG, "").strip(),
                               qa_batch=tentative) + JOINT_INSTRUCTION
    return [{"role": "system", "content": REASONER_SYSTEM}, {"role": "user", "content": user}]


@dataclass
class RacroEvalSettings:
    data: str
    output_dir: str
    image_root: str | None = None
    steps: Sequence[str] = STEPS
    vlm_path: str | None = None
    """The captioner VLM (steps qa and caption)."""
    reasoner: ReasonerConfig | None = None
    """Step reason; RACRO samples at temperature 0.6, top_p 0.95."""
    max_new_tokens: int = 8192
    """VLM budget per answer / caption (RACRO: 8192)."""
    batch_size: int = 8
    limit: int | None = None
    dtype: str = "float32"
    extra: dict[str, Any] = field(default_factory=dict)


def read_eval_rows(path: str, image_root: str | None = None, limit: int | None = None) -> list[dict]:
    """``{"id", "images", "question", "answer"}`` rows of a ViRL39K parquet or a JSONL (module docstring)."""
    if path.endswith(".parquet"):
        from paddlemix_r1.data.virl39k import read_virl39k

        rows = read_virl39k(path, image_root=image_root, limit=limit).rows
        return [{"id": r["id"], "images": r["images"], "question": r["question"], "answer": r["solution"]}
                for r in rows]
    rows = []
    root = image_root if image_root is not None else os.path.dirname(os.path.abspath(path))
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{line_no}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: invalid JSON: {e.msg}") from None
            for key in ("question", "answer", "images"):
                if key not in obj:
                    raise ValueError(f"{where}: missing field {key!r}")
            if not isinstance(obj["images"], list) or not all(isinstance(p, str) for p in obj["images"]):
                raise ValueError(f"{where}: field 'images' must be a list of paths, got {obj['images']!r}")
            images = [p if os.path.isabs(p) else os.path.join(root, p) for p in obj["images"]]
            rows.append({"id": str(obj.get("id", where)), "images": images, "question": str(obj["question"]),
                         "answer": strip_boxed(str(obj["answer"]))})
            if limit is not None and len(rows) >= limit:
                break
    return rows


def _read_outputs(path: str, step: str) -> dict[str, str]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: step {step!r} has not been run (run it first, or include it in --steps)")
    out = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                out[r["id"]] = r["output"]
    return out


def _vlm_step(rows: list[dict], s: RacroEvalSettings, build, path: str) -> None:
    """Greedy VLM outputs for ``build(question, n_images)`` conversations, written to ``path``."""
    from paddlemix_r1.generation.text import SamplingSettings, generate_chat
    from paddlemix_r1.models import from_pretrained
    from paddlemix_r1.processing import Processor

    if s.vlm_path is None:
        raise ValueError("steps qa and caption need the VLM: pass --vlm_path")
    model, proc = from_pretrained(s.vlm_path, dtype=s.dtype), Processor.from_pretrained(s.vlm_path)
    outs = generate_chat(model, proc, [build(r["question"], len(r["images"])) for r in rows],
                         SamplingSettings(max_new_tokens=s.max_new_tokens, do_sample=False), batch_size=s.batch_size,
                         images=[r["images"] for r in rows])
    atomic.write_jsonl(path, [{"id": r["id"], "question": r["question"], "answer": r["answer"], "output": o[0]}
                              for r, o in zip(rows, outs)])


def run_racro_eval(s: RacroEvalSettings) -> dict:
    """Run the requested steps; returns (and writes ``summary.json``) the accuracy when step reason ran."""
    unknown = [step for step in s.steps if step not in STEPS]
    if unknown:
        raise ValueError(f"unknown step(s) {unknown}; steps: {list(STEPS)}")
    os.makedirs(s.output_dir, exist_ok=True)
    rows = read_eval_rows(s.data, s.image_root, s.limit)
    paths = {step: os.path.join(s.output_dir, f"{step}.jsonl") for step in STEPS}
    timings: dict[str, float] = {}
    for step, build in (("qa", qa_conversation), ("caption", caption_conversation)):
        if step in s.steps:
            t0 = time.perf_counter()
            _vlm_step(rows, s, build, paths[step])
            timings[step] = round(time.perf_counter() - t0, 1)
    summary: dict[str, Any] = {"n": len(rows), "seconds": timings, "note": JUDGE_NOTE}
    if "reason" in s.steps:
        if s.reasoner is None:
            raise ValueError("step reason needs a reasoner: pass --reasoner_path or --reasoner_url")
        from paddlemix_r1.rewards.math_answer import default_verifier

        qa, captions = _read_outputs(paths["qa"], "qa"), _read_outputs(paths["caption"], "caption")
        missing = [r["id"] for r in rows if r["id"] not in qa or r["id"] not in captions]
        if missing:
            raise ValueError(f"rows {missing[:5]} have no output in qa.jsonl / caption.jsonl: re-run those steps")
        reasoner = s.reasoner.build()
        t0 = time.perf_counter()
        replies = reasoner.answer([joint_messages(captions[r["id"]], r["question"], qa[r["id"]]) for r in rows])
        timings["reason"] = round(time.perf_counter() - t0, 1)
        verifier = default_verifier()
        records, correct = [], 0
        for r, samples in zip(rows, replies):
            text = samples[0]
            boxed = None if text is None else last_boxed(text)
            verdict = "failed" if text is None else grade_boxed(boxed, r["answer"], verifier)
            correct += verdict == "correct"
            records.append({"id": r["id"], "question": r["question"], "answer": r["answer"], "output": text,
                            "boxed": boxed, "verdict": verdict})
        atomic.write_jsonl(paths["reason"], records)
        summary.update(accuracy=correct / len(rows) if rows else float("nan"), correct=correct,
                       reasoner=asdict(s.reasoner), reasoner_stats=reasoner.stats())
        atomic.write_json(os.path.join(s.output_dir, "summary.json"), summary)
    return summary
