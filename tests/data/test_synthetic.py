"""Synthetic tasks: deterministic to the byte, in the reader row format, answers the rewards accept."""

import hashlib
import io

import pytest

from paddlemix_r1.data.readers import load_row_images, read_training_files
from paddlemix_r1.data.synthetic import counting_rows, geometry_rows, rec_rows, write_jsonl_dataset
from paddlemix_r1.rewards import get_reward


def fingerprint(rows):
    digest = hashlib.sha256()
    for row in rows:
        digest.update(repr({k: v for k, v in row.items() if k != "images"}).encode())
        for image in row["images"]:
            buf = io.BytesIO()
            image.save(buf, format="PNG")
            digest.update(buf.getvalue())
    return digest.hexdigest()


@pytest.mark.parametrize("make", [counting_rows, rec_rows, geometry_rows])
def test_same_seed_same_bytes(make):
    assert fingerprint(make(6, seed=5)) == fingerprint(make(6, seed=5))
    assert fingerprint(make(6, seed=5)) != fingerprint(make(6, seed=6))


def test_geometry_rows_format_and_answers():
    rows = geometry_rows(40, seed=0)
    assert {r["task"] for r in rows} == {"geoqa"}
    assert all(set(r) == {"id", "images", "problem", "solution", "task"} for r in rows)
    assert len({r["id"] for r in rows}) == 40
    kinds = {"angle": 0, "hypotenuse": 0}
    for r in rows:
        assert isinstance(r["solution"], str) and len(r["images"]) == 1
        if r["solution"].endswith("°"):
            kinds["angle"] += 1
            a, b = [int(t.split("°")[0]) for t in r["problem"].split("= ")[1:3]]
            assert int(r["solution"][:-1]) == 180 - a - b >= 30
        else:
            kinds["hypotenuse"] += 1
            p, q = [int(t.split(" ")[0].rstrip(".")) for t in r["problem"].split("= ")[2:4]]
            assert int(r["solution"]) ** 2 == p * p + q * q
    assert min(kinds.values()) > 5
    only = geometry_rows(5, seed=1, kinds=["hypotenuse"])
    assert not any(r["solution"].endswith("°") for r in only)
    with pytest.raises(ValueError, match="kinds"):
        geometry_rows(1, kinds=["area"])


def test_geometry_answers_pass_the_math_reward():
    rows = geometry_rows(6, seed=2)
    gold = [r["solution"] for r in rows]
    right = [f"<think>...</think><answer>{g}</answer>" for g in gold]
    wrong = [f"<think>...</think><answer>{int(g.rstrip('°')) + 1}</answer>" for g in gold]
    math = get_reward("math")
    assert math(right, solution=gold) == [1.0] * 6
    assert math(wrong, solution=gold) == [0.0] * 6


def test_write_jsonl_dataset_round_trip(tmp_path):
    for task, rows in (("counting", counting_rows(3, seed=1)), ("rec", rec_rows(3, seed=1)),
                       ("geoqa", geometry_rows(3, seed=1))):
        path = write_jsonl_dataset(rows, str(tmp_path), task)
        back = read_training_files([path], str(tmp_path), task=task)
        assert [r["solution"] for r in back] == [r["solution"] for r in rows]
        assert [r["problem"] for r in back] == [r["problem"] for r in rows]
        for original, read in zip(rows, back):
            assert load_row_images(read)[0].tobytes() == original["images"][0].tobytes()
        if task == "rec":
            assert [r["normal_caption"] for r in back] == [r["normal_caption"] for r in rows]
