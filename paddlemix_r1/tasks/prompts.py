"""THE prompt table: every question template training, evaluation and the demo use, with its source.

Keyed ``(task, method)``. A method is a named template variant of a task: ``r1`` and ``baseline``
are the evaluation CLIs' ``--method``; ``train`` is the string the reference training scripts use
where it differs from their evaluation string; the ``general`` task's methods are VLM-R1's
``--task_type`` names; ``judge`` / ``choice`` / ``open`` are Curr-ReFT's curriculum stages (tasks
``detection``, ``classify``, ``math``). Each template is copied verbatim (spaces included) from the script named in
its ``source``: baselines move with the prompt, so the exact strings are part of the results, and
the templates are written into every evaluation record and summary.

Where training and evaluation strings differ it is because the reference systems differ: R1-V and
PaddleMIX train counting and geometry with "{Question}  Output the thinking process ..." (two
spaces after the question, no "First") and evaluate counting with "{Question} First output the
thinking process ...". Both are kept, each under its own method, so a run can choose either
(``GRPOConfig.task_type``; the demo trains with the evaluation prompt on purpose).

No system message is added: none of these scripts sends one (the chat template supplies the
model's default). Images come first in the user turn, then the text, as in all of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PromptTemplate:
    """A question template with ``{Question}``, the row field it is filled with, and where it comes from."""

    template: str
    source: str
    question_field: str = "problem"
    """Row field put in ``{Question}``: "problem" (the question) or "normal_caption" (REC baseline)."""

    def format(self, row: Mapping[str, Any], where: str = "row") -> str:
        """The prompt text for ``row``; ValueError naming the field and ``where`` if it is missing or empty."""
        question = row.get(self.question_field)
        if not isinstance(question, str) or not question.strip():
            raise ValueError(f"{where}: this prompt needs the row's {self.question_field!r}, which is missing or empty")
        return self.template.format(Question=question)


# VLM-R1 qwen_module.get_question_template("rec") == PaddleMIX eval/test_rec.py get_test_template("r1")
# (== VLM-R1 src/eval/test_rec_r1.py QUESTION_TEMPLATE).
_THINK_ANSWER_JSON = (
    "{Question} First output the thinking process in <think> </think> tags and then output the final answer "
    "in <answer> </answer> tags. Output the final answer in JSON format."
)
_VLM_R1_DEFAULT = (
    "{Question} First output the thinking process in <think> </think> tags and then output the final answer "
    "in <answer> </answer> tags."
)
_VLM_R1_IC = (
    "{Question} First thinks about the reasoning process in the mind and then provides the user with the answer. "
    "The reasoning process and answer are enclosed within <think> </think> and <answer> </answer> tags, "
    "respectively, i.e., <think> reasoning process here </think><answer> json format answer here </answer>"
)
_VLM_R1_OD_LENGTH = (
    "First thinks about the reasoning process in the mind and then provides the user with the answer. The "
    "reasoning process and answer are enclosed within <think> </think> and <answer> </answer> tags, respectively, "
    "i.e., <think> reasoning process here </think><answer> answer here </answer>" + "\n" + "{Question}"
)
_R1V_TRAIN = (
    "{Question}  Output the thinking process in <think> </think> and final answer (number) in "
    "<answer> </answer> tags."
)
_R1V_COUNTING_EVAL = (
    "{Question} First output the thinking process in <think> </think> and final answer (number) "
    "in <answer> </answer> tags."
)
_R1V_GEOQA_EVAL = (
    "{Question} Output the thinking process in <think> </think> and final answer (number) in <answer> </answer> tags."
)

_VLM_R1_MODULE = "VLM-R1 src/open-r1-multimodal/src/open_r1/vlm_modules/qwen_module.py get_question_template"
_PADDLEMIX_TRAIN = "PaddleMIX paddlemix/examples/r1_mllm/train/grpo_r1-v.py QUESTION_TEMPLATE (= R1-V src/r1-v/src/open_r1/grpo.py)"

REC_R1 = PromptTemplate(
    _THINK_ANSWER_JSON,
    "PaddleMIX paddlemix/examples/r1_mllm/eval/test_rec.py get_test_template('r1') (= VLM-R1 src/eval/test_rec_r1.py "
    "and get_question_template('rec'))",
)
REC_BASELINE = PromptTemplate(
    "Locate {Question}, output its bbox coordinates using JSON format.",
    "PaddleMIX paddlemix/examples/r1_mllm/eval/test_rec.py get_test_template('baseline'), filled with the row's "
    "normal_caption (VLM-R1's test_rec_baseline.py uses another string on 'problem'; we follow PaddleMIX, whose CLI "
    "this is)",
    question_field="normal_caption",
)
COUNTING_TRAIN = PromptTemplate(_R1V_TRAIN, _PADDLEMIX_TRAIN)
COUNTING_EVAL = PromptTemplate(
    _R1V_COUNTING_EVAL,
    "R1-V src/eval/test_qwen2vl_counting_superclevr.py QUESTION_TEMPLATE (= PaddleMIX eval/test_r1-v.py "
    "get_test_template, which returns it for both methods: the baseline differs by checkpoint only)",
)
GEOQA_TRAIN = PromptTemplate(_R1V_TRAIN, _PADDLEMIX_TRAIN + ", which trains geometry with the counting template")
GEOQA_EVAL = PromptTemplate(
    _R1V_GEOQA_EVAL,
    "R1-V src/eval/test_qwen2vl_geoqa.py QUESTION_TEMPLATE, the script behind R1-V's GeoQA numbers (PaddleMIX's "
    "test_r1-v.py reused the counting template, but its GeoQA scores were always 0: a \\d+ extractor on '140°')",
)

# Curr-ReFT (ding523/Curr_REFT at f123433; research file Part 1 §1.2). Every stage prompt extends VLM-R1's default.
_CURR_TRAIN = "Curr-ReFT train_code/grpo/open-r1-multimodal/src/open_r1/"
_CURR_EVAL_SCRIPT = "Curr-ReFT eval/muti_process_eval.py"
CURR_JUDGE = PromptTemplate(
    _VLM_R1_DEFAULT + " Ensure your final answer is exactly 'yes' or 'no'.",
    _CURR_TRAIN + "Stage1_judge_math_resize.py (every task)",
)
CURR_CHOICE = PromptTemplate(
    _VLM_R1_DEFAULT + " Ensure your final answer is exactly one of the provided option letters without any "
    "additional text.",
    _CURR_TRAIN + "Stage2_choice_math_resize.py (every task but classify)",
)
CURR_CHOICE_ALL = PromptTemplate(
    _VLM_R1_DEFAULT + " Based on the given options, select all options that accurately describe what is shown in "
    "the image. Ensure your final answer is exactly one or more of the provided option letters without any "
    "additional text.",
    _CURR_TRAIN + "Stage2_choice_math_resize.py (classify)",
)
CURR_OPEN_DETECTION = PromptTemplate(
    _VLM_R1_DEFAULT + " Output the final answer in JSON format in <answer> </answer> tags.",
    _CURR_TRAIN + "Stage3_open_math_resize.py (detection)",
)
CURR_OPEN = PromptTemplate(_VLM_R1_DEFAULT, _CURR_TRAIN + "Stage3_open_math_resize.py (every task but detection)")
CURR_EVAL_DETECTION = PromptTemplate(
    "{Question} First output your thinking process in <think> </think> tags and then provide the the final answer "
    "as bounding box coordinates in <answer> </answer> tags. Output the final answer in JSON format.",
    _CURR_EVAL_SCRIPT + " (detection; 'the the' is theirs)",
)
CURR_EVAL = PromptTemplate(_VLM_R1_DEFAULT, _CURR_EVAL_SCRIPT + " (classify and math: the stage-3 template)")


PROMPTS: dict[tuple[str, str], PromptTemplate] = {
    ("rec", "r1"): REC_R1,
    ("rec", "rec"): REC_R1,  # VLM-R1's --task_type rec, the same string
    ("rec", "baseline"): REC_BASELINE,
    ("counting", "train"): COUNTING_TRAIN,
    ("counting", "r1"): COUNTING_EVAL,
    ("counting", "baseline"): COUNTING_EVAL,
    ("geoqa", "train"): GEOQA_TRAIN,
    ("geoqa", "r1"): GEOQA_EVAL,
    ("geoqa", "baseline"): GEOQA_EVAL,
    # VLM-R1's own-data task: the template is chosen by --task_type (``GRPOConfig.task_type``).
    ("general", "default"): PromptTemplate(_VLM_R1_DEFAULT, f"{_VLM_R1_MODULE} (default case)"),
    ("general", "rec"): PromptTemplate(_THINK_ANSWER_JSON, f"{_VLM_R1_MODULE}('rec')"),
    ("general", "ic"): PromptTemplate(_VLM_R1_IC, f"{_VLM_R1_MODULE}('ic')"),
    ("general", "odLength"): PromptTemplate(_VLM_R1_OD_LENGTH, f"{_VLM_R1_MODULE}('odLength')"),
    ("general", "gui"): PromptTemplate(_VLM_R1_DEFAULT, f"{_VLM_R1_MODULE} (default case; run_grpo_gui.sh)"),
    # OVD: the detection instruction is in the row's question (VLM-R1 keeps it in the data); r1 wraps it in the
    # odLength template VLM-R1's OVD training used, baseline asks it alone.
    ("ovd", "r1"): PromptTemplate(_VLM_R1_OD_LENGTH, f"{_VLM_R1_MODULE}('odLength')"),
    ("ovd", "baseline"): PromptTemplate("{Question}", "the row's own OVD question (VLM-R1 examples/ovd, blog prompt)"),
    # Curr-ReFT's curriculum (research Part 1 §1.2): stage 1 judge (yes/no), stage 2 choice (option letters;
    # classify selects every option that applies), stage 3 open. r1 is its evaluation string; it evaluates base
    # models with the same prompt, so baseline is that string too (read leniently, as every baseline).
    ("detection", "judge"): CURR_JUDGE,
    ("detection", "choice"): CURR_CHOICE,
    ("detection", "open"): CURR_OPEN_DETECTION,
    ("detection", "r1"): CURR_EVAL_DETECTION,
    ("detection", "baseline"): CURR_EVAL_DETECTION,
    ("classify", "judge"): CURR_JUDGE,
    ("classify", "choice"): CURR_CHOICE_ALL,
    ("classify", "open"): CURR_OPEN,
    ("classify", "r1"): CURR_EVAL,
    ("classify", "baseline"): CURR_EVAL,
    ("math", "judge"): CURR_JUDGE,
    ("math", "choice"): CURR_CHOICE,
    ("math", "open"): CURR_OPEN,
    ("math", "r1"): CURR_EVAL,
    ("math", "baseline"): CURR_EVAL,
}


def get_prompt(task: str, method: str) -> PromptTemplate:
    """The template of ``task`` for ``method``; ValueError listing the task's methods if there is none."""
    try:
        return PROMPTS[(task, method)]
    except KeyError:
        known = sorted(m for t, m in PROMPTS if t == task)
        if not known:
            raise ValueError(f"no prompts for task {task!r}; tasks: {sorted({t for t, _ in PROMPTS})}") from None
        raise ValueError(f"task {task!r} has no prompt method {method!r}; its methods: {known}") from None


def methods_of(task: str) -> tuple[str, ...]:
    """The prompt methods of ``task``, in table order."""
    return tuple(m for t, m in PROMPTS if t == task)
