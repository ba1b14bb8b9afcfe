"""Readers: valid rows, malformed rows named by file and line, seeded subsampling."""

import json
import os
import random

import pytest

from paddlemix_r1.eval.data import (
    DatasetError,
    read_counting_jsonl,
    read_eval_rows,
    read_geoqa_jsonl,
    read_rec_json,
    select_rows,
)


def test_read_rec_json(rec_set):
    path, root = rec_set
    rows = read_rec_json(str(path), str(root))
    assert [r.id for r in rows] == [f"tiny_rec/{i}" for i in range(5)]
    assert rows[2].image == os.path.join(str(root), "sub", "c.png")
    assert rows[0].question == "the red car" and rows[0].caption == "red car"
    assert rows[0].solution == [100.0, 100.0, 300.0, 200.0]
    # the source points at the line the row starts on (json.dumps(indent=2): rows 11 lines apart)
    assert rows[0].source == f"{path}:2"
    assert rows[1].source == f"{path}:13"


def test_read_counting_and_geoqa(counting_set, geoqa_set):
    path, root = counting_set
    rows = read_counting_jsonl(str(path), str(root))
    assert [r.solution for r in rows] == [3, 5, 7]
    assert rows[0].image == os.path.join(str(root), "images", "0.png")  # "./" dropped
    assert rows[1].source == f"{path}:2"
    path, root = geoqa_set
    rows = read_geoqa_jsonl(str(path), str(root))
    assert [r.solution for r in rows] == ["140°", "2√{3}", "\\frac{4}{3}cm"]


REC_GOOD = {"image": "a.jpg", "problem": "p", "solution": [1, 2, 3, 4]}


@pytest.mark.parametrize(
    "text, line, message",
    [
        (json.dumps([REC_GOOD, {"image": "a.jpg", "problem": "p"}], indent=1), 12, "missing field 'solution'"),
        ("[\n" + json.dumps(REC_GOOD) + ",\n" + json.dumps({**REC_GOOD, "image": ""}) + "\n]", 3, "'image'"),
        ("[\n" + json.dumps(REC_GOOD) + ",\n[1, 2]\n]", 3, "JSON object"),
        ("[\n" + json.dumps(REC_GOOD) + ',\n{"image": \n]', 4, "invalid JSON"),
        ('{"rows": []}', 1, "missing field 'image'"),  # a .json starting with "{" is JSON Lines (one reader)
        ("[\n" + json.dumps(REC_GOOD) + "\n]\n[]", 4, "after the JSON list"),
        ("[\n" + json.dumps(REC_GOOD) + "\n" + json.dumps(REC_GOOD) + "]", 3, "expected ','"),
    ],
    ids=[
        "missing-solution",
        "empty-image",
        "not-an-object",
        "bad-json",
        "not-a-list",
        "trailing",
        "no-comma",
    ],
)
def test_malformed_rec_rows_name_file_and_line(tmp_path, text, line, message):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(DatasetError, match=message) as info:
        read_rec_json(str(path), str(tmp_path))
    assert str(info.value).startswith(f"{path}:{line}")


@pytest.mark.parametrize(
    "bad_line, message",
    [
        ('{"image_path": "x.png", "question": "q"}', "ground_truth"),
        ('{"question": "q", "ground_truth": 3}', "image_path"),
        ('{"image_path": "x.png", "question": "q", "ground_truth": 3', "invalid JSON"),
        ("[3]", "JSON object"),
    ],
)
def test_malformed_counting_rows_name_file_and_line(tmp_path, bad_line, message):
    good = json.dumps({"image_path": "x.png", "question": "q", "ground_truth": 3})
    path = tmp_path / "bad.jsonl"
    path.write_text(f"{good}\n\n{bad_line}\n")  # blank line 2 is skipped but still counted
    with pytest.raises(DatasetError, match=message) as info:
        read_counting_jsonl(str(path), str(tmp_path))
    assert str(info.value).startswith(f"{path}:3")


def test_malformed_geoqa_row(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"image_path": "x.png", "question": "q", "ground_truth": null}\n')
    with pytest.raises(DatasetError, match=f"{path}:1"):
        read_geoqa_jsonl(str(path), str(tmp_path))


def test_select_rows_matches_the_anchors_global_shuffle(rec_set):
    path, root = rec_set
    rows = read_rec_json(str(path), str(root))
    picked = select_rows(rows, 3, seed=42)
    # PaddleMIX / VLM-R1: random.seed(seed); random.shuffle(data); data[:sample_num]
    reference = list(rows)
    random.seed(42)
    random.shuffle(reference)
    assert [r.id for r in picked] == [r.id for r in reference[:3]]
    assert [r.id for r in select_rows(rows, 3, seed=42)] == [r.id for r in picked]  # deterministic
    assert select_rows(rows, None, seed=0) == rows  # all rows, file order
    assert len(select_rows(rows, 100, seed=1)) == len(rows)
    with pytest.raises(ValueError, match="sample_num"):
        select_rows(rows, 0, seed=1)


@pytest.mark.parametrize("task, gold, message", [
    ("rec", [1, 2, 3], "4 numbers"),
    ("rec", [3, 2, 1, 4], "x2 > x1"),
    ("counting", "many", "integer"),
    ("counting", True, "integer"),
    ("counting", -3, ">= 0"),
], ids=["short-box", "inverted-box", "count-word", "count-bool", "count-negative"])
def test_rows_with_a_bad_gold_are_kept_as_errors(tmp_path, task, gold, message):
    """A gold the task cannot score is that row's error (counted by the evaluator), in its place."""
    good = {"image": "a.jpg", "problem": "p", "solution": [1, 2, 3, 4] if task == "rec" else 3}
    path = tmp_path / "set.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in (good, {**good, "solution": gold}, good)) + "\n")
    rows = read_eval_rows(str(path), str(tmp_path), task)
    assert [r.error is None for r in rows] == [True, False, True]
    assert rows[1].error.startswith(f"{path}:2: field 'solution': ") and message in rows[1].error
    assert rows[1].solution == gold and rows[1].id == "set/1"
    path.write_text(json.dumps({**good, "solution": gold}) + "\n")
    with pytest.raises(DatasetError, match=rf"set.jsonl:1: .*{message}"):  # nothing left to evaluate
        read_eval_rows(str(path), str(tmp_path), task)
