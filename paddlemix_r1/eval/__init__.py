"""Evaluation shared by eval/test_rec.py and eval/test_r1-v.py: rows, the loop, the CLIs.

Prompts, answer parsing and metrics are the tasks' (``paddlemix_r1.tasks``; the one prompt table is
``paddlemix_r1.tasks.prompts.PROMPTS``, re-exported here); files are read by ``paddlemix_r1.data.readers``. ``pass_at_k`` (``passk`` module, eval/pass_at_k.py) turns
the per-sample records of an ``evaluate(..., num_samples=n)`` run into pass@k curves.
"""

from paddlemix_r1.eval.data import (
    DatasetError,
    EvalRow,
    read_counting_jsonl,
    read_eval_rows,
    read_geoqa_jsonl,
    read_rec_json,
    select_rows,
)
from paddlemix_r1.eval.evaluator import (
    METHODS,
    EvalSample,
    EvalSummary,
    GenerateFn,
    SampleScore,
    evaluate,
    format_table,
)
from paddlemix_r1.eval.passk import PassAtK, pass_at_k, pass_at_k_of_file, pass_at_k_of_records, write_pass_at_k
from paddlemix_r1.tasks import PROMPTS, PromptTemplate, build_conversation, get_prompt

__all__ = [
    "METHODS",
    "PROMPTS",
    "DatasetError",
    "EvalRow",
    "EvalSample",
    "EvalSummary",
    "GenerateFn",
    "PassAtK",
    "PromptTemplate",
    "SampleScore",
    "build_conversation",
    "evaluate",
    "format_table",
    "get_prompt",
    "pass_at_k",
    "pass_at_k_of_file",
    "pass_at_k_of_records",
    "read_counting_jsonl",
    "read_eval_rows",
    "read_geoqa_jsonl",
    "read_rec_json",
    "select_rows",
    "write_pass_at_k",
]
