"""Evaluation shared by eval/test_rec.py and eval/test_r1-v.py: readers, prompts, the loop, the CLIs."""

from paddlemix_r1.eval.data import (
    DatasetError,
    EvalRow,
    read_counting_jsonl,
    read_geoqa_jsonl,
    read_rec_json,
    select_rows,
)
from paddlemix_r1.eval.evaluator import (
    EvalSample,
    EvalSummary,
    GenerateFn,
    evaluate,
    format_table,
)
from paddlemix_r1.eval.prompts import (
    PROMPTS,
    PromptTemplate,
    build_conversation,
    get_prompt,
)

__all__ = [
    "PROMPTS",
    "DatasetError",
    "EvalRow",
    "EvalSample",
    "EvalSummary",
    "GenerateFn",
    "PromptTemplate",
    "build_conversation",
    "evaluate",
    "format_table",
    "get_prompt",
    "read_counting_jsonl",
    "read_geoqa_jsonl",
    "read_rec_json",
    "select_rows",
]
