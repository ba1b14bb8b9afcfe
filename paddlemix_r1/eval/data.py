"""The evaluation sets as ``EvalRow`` s, read by the one reader per file format, and ``--sample_num``.

Input formats (as distributed with PaddleMIX R1-MLLM / VLM-R1 / R1-V):

REC json (``<data_root>/<name>.json``, e.g. refcoco_val): ONE JSON list of rows
    ``{"image": "train2014/COCO_...jpg", "problem": "...", "normal_caption": "...",
    "solution": [x1, y1, x2, y2], ...}`` -- ``image`` relative to ``--image_root``, ``solution``
    in original image pixels; other keys are kept but not used.
SuperCLEVR jsonl (``<data_root>/<name>.jsonl``): one row per line
    ``{"image_path": "./images/superCLEVR_new_025000.png", "question": "...", "ground_truth": 4}``.
GeoQA jsonl: the same fields with string answers (``"ground_truth": "140°"``).

Files are parsed by ``paddlemix_r1.data.readers`` (the training reader: same schemas, same gold
parsing and checks by the task, same ``<file>:<line>`` errors). A malformed row (a missing field,
invalid JSON, bytes that are not UTF-8) raises DatasetError (a ValueError) naming the file and line:
a broken test set must not turn into a quietly different accuracy. A well-formed row whose gold
answer its task cannot score (``Task.check_gold``: unparsable, a NaN or inverted box, a negative
count) is kept in its place with ``error`` set; the evaluator counts it as an error (a file in which
every row is such a row raises: there is nothing to evaluate). Images are NOT opened here; a
missing, undecodable or unprocessable image is a per-sample error the evaluator records and counts
(see ``evaluate``).
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from paddlemix_r1.data.readers import BadGoldError, DatasetError, read_row_results


@dataclass(frozen=True)
class EvalRow:
    """One test question.

    id:       "<dataset>/<index>", index = 0-based position in the file (stable across runs).
    image:    image path, ``image_root`` joined with the row's relative path.
    question: the question text (REC ``problem``, SuperCLEVR / GeoQA ``question``).
    solution: the gold answer in the task's canonical form: [x1, y1, x2, y2] in original pixels
              (rec), int (counting), str (geoqa).
    source:   "<file>:<line>" of the row, for messages.
    caption:  REC ``normal_caption`` (the object phrase alone; the REC baseline prompt uses it).
    fields:   the row in the readers' format (``paddlemix_r1.tasks.rows``).
    error:    why the row cannot be scored (its gold answer, as the file gives it in ``solution``), or
              None; the evaluator records it as the row's error without generating.
    """

    id: str
    image: str
    question: str
    solution: Any
    source: str
    caption: str | None = None
    fields: Mapping[str, Any] = field(default_factory=dict)
    error: str | None = None

    def prompt_fields(self) -> dict[str, Any]:
        """The row as the prompt templates read it (``problem``, ``normal_caption``), from this row's values."""
        return {**self.fields, "problem": self.question, "normal_caption": self.caption}


def _dataset_name(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def read_eval_rows(path: str, image_root: str, task: str) -> list[EvalRow]:
    """Every row of one evaluation file, in file order, read as ``task`` rows (one image each); a row
    with a gold answer the task cannot score is kept with ``error`` set (see the module docstring)."""
    name = _dataset_name(path)
    rows = []
    for index, (where, result) in enumerate(read_row_results(path, image_root, task)):
        error = None
        if isinstance(result, BadGoldError):
            row, error = result.row, str(result)
        elif isinstance(result, DatasetError):
            raise result
        else:
            row = result
        if row["task"] != task:
            raise DatasetError(f"{where}: the row's task is {row['task']!r}, this evaluation is {task!r}")
        if len(row["images"]) != 1:
            raise DatasetError(f"{where}: evaluation reads one image per row, got {len(row['images'])}")
        rows.append(EvalRow(f"{name}/{index}", row["images"][0], row["problem"], row["solution"], where,
                            row.get("normal_caption"), row, error))
    if not rows:
        raise DatasetError(f"{path}: no rows")
    if all(row.error is not None for row in rows):  # nothing to score: fail before any model loads
        raise DatasetError(f"{rows[0].error} (and every other row of the file has a bad gold answer)"
                           if len(rows) > 1 else rows[0].error)
    return rows


def read_rec_json(path: str, image_root: str) -> list[EvalRow]:
    """Rows of a REC json file (a JSON list; see the module docstring)."""
    return read_eval_rows(path, image_root, "rec")


def read_counting_jsonl(path: str, image_root: str) -> list[EvalRow]:
    """Rows of a SuperCLEVR-style counting jsonl; ``ground_truth`` must be an integer count."""
    return read_eval_rows(path, image_root, "counting")


def read_geoqa_jsonl(path: str, image_root: str) -> list[EvalRow]:
    """Rows of a GeoQA-style jsonl; ``ground_truth`` is an answer string ("140°", "2√{3}", ...).

    Only the type is checked here; whether math_verify can parse a gold answer is checked when it
    is scored (that needs the math worker).
    """
    return read_eval_rows(path, image_root, "geoqa")


def select_rows(rows: Sequence[EvalRow], sample_num: int | None, seed: int) -> list[EvalRow]:
    """``--sample_num``: None keeps every row in file order; N shuffles with ``seed`` and keeps N.

    ``random.Random(seed).shuffle`` draws the same permutation as the anchors'
    ``random.seed(seed); random.shuffle(data)``, so the same N rows are picked from the same file.
    """
    if sample_num is None:
        return list(rows)
    if sample_num < 1:
        raise ValueError(f"sample_num must be >= 1, got {sample_num}")
    shuffled = list(rows)
    random.Random(seed).shuffle(shuffled)
    return shuffled[:sample_num]
