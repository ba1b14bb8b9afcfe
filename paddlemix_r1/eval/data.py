"""Readers for the evaluation sets and the seeded subsampling of ``--sample_num``.

Input formats (as distributed with PaddleMIX R1-MLLM / VLM-R1 / R1-V):

REC json (``<data_root>/<name>.json``, e.g. refcoco_val): ONE JSON list of rows
    ``{"image": "train2014/COCO_...jpg", "problem": "...", "normal_caption": "...",
    "solution": [x1, y1, x2, y2], ...}`` -- ``image`` relative to ``--image_root``, ``solution``
    in original image pixels; other keys are kept but not used.
SuperCLEVR jsonl (``<data_root>/<name>.jsonl``): one row per line
    ``{"image_path": "./images/superCLEVR_new_025000.png", "question": "...", "ground_truth": 4}``.
GeoQA jsonl: the same fields with string answers (``"ground_truth": "140°"``).

A malformed row raises DatasetError (a ValueError) naming the file and line: a broken test set
must not turn into a quietly different accuracy. Images are NOT opened here; a missing or
unreadable image is a per-sample error the evaluator records and counts (see ``evaluate``).
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from paddlemix_r1.data.readers import DatasetError, iter_json_list, iter_jsonl, join_image
from paddlemix_r1.rewards.counting import gold_count
from paddlemix_r1.rewards.math_answer import gold_text
from paddlemix_r1.rewards.rec import gold_box


@dataclass(frozen=True)
class EvalRow:
    """One test question.

    id:       "<dataset>/<index>", index = 0-based position in the file (stable across runs).
    image:    image path, ``image_root`` joined with the row's relative path.
    question: the question text (REC ``problem``, SuperCLEVR / GeoQA ``question``).
    solution: the gold answer: [x1, y1, x2, y2] in original pixels (REC), int (counting), str (GeoQA).
    source:   "<file>:<line>" of the row, for messages.
    caption:  REC ``normal_caption`` (the object phrase alone; the REC baseline prompt uses it).
    fields:   the row as read, for the per-sample output.
    """

    id: str
    image: str
    question: str
    solution: Any
    source: str
    caption: str | None = None
    fields: Mapping[str, Any] = field(default_factory=dict)


def _dataset_name(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def _require_str(row: Mapping[str, Any], key: str, where: str) -> str:
    if key not in row:
        raise DatasetError(f"{where}: missing field {key!r} (fields: {sorted(row)})")
    value = row[key]
    if not isinstance(value, str) or not value.strip():
        raise DatasetError(f"{where}: field {key!r} must be a non-empty string, got {value!r}")
    return value


def read_rec_json(path: str, image_root: str) -> list[EvalRow]:
    """Rows of a REC json file (a JSON list; see the module docstring)."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    name = _dataset_name(path)
    rows = []
    for index, (line, row) in enumerate(iter_json_list(text, path)):
        where = f"{path}:{line}"
        if not isinstance(row, dict):
            raise DatasetError(f"{where}: row must be a JSON object, got {type(row).__name__}")
        image = _require_str(row, "image", where)
        question = _require_str(row, "problem", where)
        if "solution" not in row:
            raise DatasetError(f"{where}: missing field 'solution'")
        try:
            solution = list(gold_box(row["solution"], where=f"{where}: field 'solution'"))
        except (TypeError, ValueError) as e:
            raise DatasetError(str(e)) from None
        caption = row.get("normal_caption")
        if caption is not None and not isinstance(caption, str):
            raise DatasetError(f"{where}: field 'normal_caption' must be a string, got {caption!r}")
        rows.append(EvalRow(f"{name}/{index}", join_image(image_root, image), question, solution, where, caption, row))
    return rows


def _read_jsonl(path: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """Rows of a JSON Lines file; the first malformed line raises (evaluation never skips rows)."""
    for line_no, row in iter_jsonl(path):
        if isinstance(row, DatasetError):
            raise row
        if not isinstance(row, dict):
            raise DatasetError(f"{path}:{line_no}: row must be a JSON object, got {type(row).__name__}")
        yield line_no, row


def _read_r1v_jsonl(path: str, image_root: str, check_gold: Any) -> list[EvalRow]:
    name = _dataset_name(path)
    rows = []
    for index, (line_no, row) in enumerate(_read_jsonl(path)):
        where = f"{path}:{line_no}"
        image = _require_str(row, "image_path", where)
        question = _require_str(row, "question", where)
        if "ground_truth" not in row:
            raise DatasetError(f"{where}: missing field 'ground_truth'")
        try:
            check_gold(row["ground_truth"], where=f"{where}: field 'ground_truth'")
        except (TypeError, ValueError) as e:
            raise DatasetError(str(e)) from None
        rows.append(
            EvalRow(f"{name}/{index}", join_image(image_root, image), question, row["ground_truth"], where, None, row)
        )
    return rows


def read_counting_jsonl(path: str, image_root: str) -> list[EvalRow]:
    """Rows of a SuperCLEVR-style counting jsonl; ``ground_truth`` must be an integer count."""
    return _read_r1v_jsonl(path, image_root, gold_count)


def read_geoqa_jsonl(path: str, image_root: str) -> list[EvalRow]:
    """Rows of a GeoQA-style jsonl; ``ground_truth`` is an answer string ("140°", "2√{3}", ...).

    Only the type is checked here; whether math_verify can parse a gold answer is checked when it
    is scored (that needs the math worker).
    """
    return _read_r1v_jsonl(path, image_root, gold_text)


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
