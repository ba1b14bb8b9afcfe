"""Question templates for ``--method r1`` and ``--method baseline``, with their sources.

Baselines move with the prompt, so the exact templates are fixed here, written into every
per-sample record and into the summary. Each is taken verbatim from the evaluation script that
produced the published numbers for that test set:

rec / r1
    "{Question} First output the thinking process in <think> </think> tags and then output the
    final answer in <answer> </answer> tags. Output the final answer in JSON format."
    with Question = the row's ``problem``.
    PaddleMIX paddlemix/examples/r1_mllm/eval/test_rec.py ``get_test_template("r1")``, identical
    to VLM-R1 src/eval/test_rec_r1.py ``QUESTION_TEMPLATE``.
rec / baseline
    "Locate {Question}, output its bbox coordinates using JSON format."
    with Question = the row's ``normal_caption``.
    PaddleMIX test_rec.py ``get_test_template("baseline")``. (VLM-R1's test_rec_baseline.py uses
    "{Question} Please provide the bounding box coordinate in JSON format." on ``problem``
    instead; we follow PaddleMIX, whose CLI this is.)
counting / r1 and baseline
    "{Question} First output the thinking process in <think> </think> and final answer (number)
    in <answer> </answer> tags."
    R1-V src/eval/test_qwen2vl_counting_superclevr.py ``QUESTION_TEMPLATE``; PaddleMIX
    test_r1-v.py ``get_test_template`` returns this same string for both methods (the baseline
    differs by checkpoint only), and so do we.
geoqa / r1 and baseline
    "{Question} Output the thinking process in <think> </think> and final answer (number) in
    <answer> </answer> tags."
    R1-V src/eval/test_qwen2vl_geoqa.py (and test_qwen2vl_geoqa_multigpu.py) ``QUESTION_TEMPLATE``,
    the script behind R1-V's GeoQA numbers. PaddleMIX test_r1-v.py reused the counting template
    (with "First") for GeoQA; its GeoQA scores were always 0 anyway (a ``\\d+`` extractor against
    "140°" answers), so R1-V's template is the reference that has numbers behind it.

No system message is added: none of these scripts sends one (the chat template supplies the
model's default). The image comes first in the user turn, then the text, as in all three.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from paddlemix_r1.eval.data import EvalRow

METHODS = ("r1", "baseline")


@dataclass(frozen=True)
class PromptTemplate:
    """A question template, the row field it is filled with, and where it comes from."""

    template: str
    question_field: str  # "question" (EvalRow.question) or "caption" (EvalRow.caption)
    source: str

    def format(self, row: EvalRow) -> str:
        question = getattr(row, self.question_field)
        if not isinstance(question, str) or not question.strip():
            field = "normal_caption" if self.question_field == "caption" else "question"
            raise ValueError(f"{row.source}: this prompt needs the row's {field!r}, which is missing or empty")
        return self.template.format(Question=question)


_REC_R1 = PromptTemplate(
    "{Question} First output the thinking process in <think> </think> tags and then output the final answer "
    "in <answer> </answer> tags. Output the final answer in JSON format.",
    "question",
    "PaddleMIX paddlemix/examples/r1_mllm/eval/test_rec.py get_test_template('r1') (= VLM-R1 src/eval/test_rec_r1.py)",
)
_REC_BASELINE = PromptTemplate(
    "Locate {Question}, output its bbox coordinates using JSON format.",
    "caption",
    "PaddleMIX paddlemix/examples/r1_mllm/eval/test_rec.py get_test_template('baseline')",
)
_COUNTING = PromptTemplate(
    "{Question} First output the thinking process in <think> </think> and final answer (number) "
    "in <answer> </answer> tags.",
    "question",
    "R1-V src/eval/test_qwen2vl_counting_superclevr.py (= PaddleMIX eval/test_r1-v.py, both methods)",
)
_GEOQA = PromptTemplate(
    "{Question} Output the thinking process in <think> </think> and final answer (number) in <answer> </answer> tags.",
    "question",
    "R1-V src/eval/test_qwen2vl_geoqa.py",
)

PROMPTS: dict[tuple[str, str], PromptTemplate] = {
    ("rec", "r1"): _REC_R1,
    ("rec", "baseline"): _REC_BASELINE,
    ("counting", "r1"): _COUNTING,
    ("counting", "baseline"): _COUNTING,
    ("geoqa", "r1"): _GEOQA,
    ("geoqa", "baseline"): _GEOQA,
}


def get_prompt(task: str, method: str) -> PromptTemplate:
    """The template for ``task`` ("rec", "counting", "geoqa") and ``method`` ("r1", "baseline")."""
    try:
        return PROMPTS[(task, method)]
    except KeyError:
        raise ValueError(f"no prompt for task={task!r}, method={method!r}; known: {sorted(PROMPTS)}") from None


def build_conversation(prompt: str) -> list[dict[str, Any]]:
    """One user turn: the image, then the prompt text (the Processor's message format)."""
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
