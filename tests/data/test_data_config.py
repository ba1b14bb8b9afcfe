"""Curr-ReFT's data-config YAML (train_datasets / val_datasets, sampling strategies), checked against a
reference implementation of THEIR loader (Stage*_math_resize.py ``LazySupervisedDataset``: the global
``random`` module, ``random.shuffle`` then the first N, ``P%`` = ceil(P * len / 100), the train datasets
loaded before the val datasets in one process) with ``random.seed(seed)`` once before loading."""

from __future__ import annotations

import json
import math
import random

import pytest
import yaml

from paddlemix_r1.data.readers import (
    DatasetError,
    has_val_datasets,
    read_training_files,
    read_val_datasets,
)


def _their_split(datasets: list[dict]) -> list[dict]:
    """Their per-split loop, on the global generator (written from the research notes, §1.1)."""
    out = []
    for d in datasets:
        path = d["json_path"]
        if path.endswith(".jsonl"):
            with open(path) as f:
                rows = [json.loads(line.strip()) for line in f]
        else:
            with open(path) as f:
                rows = json.load(f)
        strategy, number = d.get("sampling_strategy", "all"), None
        if ":" in strategy:
            strategy, number = strategy.split(":")
            number = math.ceil(int(number.split("%")[0]) * len(rows) / 100) if "%" in number else int(number)
        if strategy == "first" and number is not None:
            rows = rows[:number]
        elif strategy == "end" and number is not None:
            rows = rows[-number:]
        elif strategy == "random" and number is not None:
            random.shuffle(rows)
            rows = rows[:number]
        out.extend(rows)
    return out


def their_loader(config: str, seed: int) -> tuple[list[dict], list[dict]]:
    """(train rows, val rows) as their trainer builds them, after ``random.seed(seed)``."""
    with open(config) as f:
        cfg = yaml.safe_load(f)
    state = random.getstate()
    try:
        random.seed(seed)
        train = _their_split(cfg["train_datasets"])
        val = _their_split(cfg["val_datasets"])
    finally:
        random.setstate(state)
    return train, val


def _write(path, name: str, n: int, as_list: bool = False) -> str:
    rows = [{"image": f"{name}_{i}.png", "problem": f"{name} question {i}: how many?",
             "solution": f"<answer>{i % 7}</answer>", "task": "counting"} for i in range(n)]
    file = path / (f"{name}.json" if as_list else f"{name}.jsonl")
    file.write_text(json.dumps(rows) if as_list else "".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(file)


@pytest.fixture
def config(tmp_path):
    a = _write(tmp_path, "judge_math_train", 23)
    b = _write(tmp_path, "judge_coco_train", 17, as_list=True)
    c = _write(tmp_path, "judge_math_val", 11)
    d = _write(tmp_path, "judge_coco_val", 9, as_list=True)
    cfg = {
        "train_datasets": [
            {"json_path": a, "sampling_strategy": "random:7"},
            {"json_path": a, "sampling_strategy": "random:40%"},  # listed twice, as their math x2 oversampling
            {"json_path": b, "sampling_strategy": "first:5"},
            {"json_path": b, "sampling_strategy": "end:25%"},
            {"json_path": b},  # all
            {"json_path": c, "sampling_strategy": "random:100"},  # more than the file holds: all, shuffled
        ],
        "val_datasets": [
            {"json_path": c, "sampling_strategy": "random:3"},
            {"json_path": d, "sampling_strategy": "end:4"},
            {"json_path": d, "sampling_strategy": "random:50%"},
        ],
    }
    path = tmp_path / "3_tasks.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return str(path)


def _problems(rows) -> list[str]:
    return [r["problem"] for r in rows]


@pytest.mark.parametrize("seed", [42, 0, 7])
def test_sampling_selects_exactly_their_rows(config, tmp_path, seed):
    train, val = their_loader(config, seed)
    ours = read_training_files([config], str(tmp_path), "counting", check_images="none", seed=seed)
    assert _problems(ours) == _problems(train)  # same rows, same order
    ours_val = read_val_datasets(config, str(tmp_path), "counting", check_images="none", seed=seed)
    assert _problems(ours_val) == _problems(val)  # the val draws continue the stream after the train ones
    assert [r["solution"] for r in ours] == [int(r["solution"][8:-9]) for r in train]


def test_seed_changes_the_random_entries_only(config, tmp_path):
    a = read_training_files([config], str(tmp_path), "counting", check_images="none", seed=1)
    b = read_training_files([config], str(tmp_path), "counting", check_images="none", seed=2)
    assert len(a) == len(b) == 7 + math.ceil(0.4 * 23) + 5 + math.ceil(0.25 * 17) + 17 + 11
    assert _problems(a)[:7] != _problems(b)[:7]
    assert _problems(a)[17:22] == _problems(b)[17:22]  # first:5 of the coco file, whatever the seed


def test_datasets_key_still_reads_and_val_is_optional(tmp_path):
    a = _write(tmp_path, "rows", 6)
    path = tmp_path / "vlm_r1.yaml"
    path.write_text(yaml.safe_dump({"datasets": [{"json_path": a, "sampling_strategy": "end:2"}]}), encoding="utf-8")
    rows = read_training_files([str(path)], str(tmp_path), "counting", check_images="none")
    assert _problems(rows) == ["rows question 4: how many?", "rows question 5: how many?"]
    assert not has_val_datasets(str(path))
    with pytest.raises(DatasetError, match=r"vlm_r1.yaml: expected a 'val_datasets:' list"):
        read_val_datasets(str(path), str(tmp_path), "counting", check_images="none")


@pytest.mark.parametrize("body, match", [
    ({"train_datasets": [{"json_path": "A", "sampling_strategy": "end:0"}]}, r"train_datasets\[0\]: .*rows\[-0:\]"),
    ({"train_datasets": [{"json_path": "A", "sampling_strategy": "random"}]}, r"train_datasets\[0\]: sampling_strategy"),
    ({"train_datasets": [{"json_path": "A", "sampling_strategy": "last:3"}]}, r"train_datasets\[0\]: sampling_strategy"),
    ({"train_datasets": [{"json_path": "A", "sampling_strategy": "first:x%"}]}, "is not a number"),
    ({"datasets": [{"json_path": "A"}], "train_datasets": [{"json_path": "A"}]}, "not both"),
    ({"val_datasets": [{"json_path": "A"}]}, r"expected a 'train_datasets:' or 'datasets:' list"),
    ({"train_datasets": [{"path": "A"}]}, r"train_datasets\[0\]: each entry needs a 'json_path'"),
])
def test_config_errors_name_the_entry(tmp_path, body, match):
    a = _write(tmp_path, "rows", 4)
    text = yaml.safe_dump(body).replace(": A", f": {a}")
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DatasetError, match=match):
        read_training_files([str(path)], str(tmp_path), "counting", check_images="none")


def test_val_of_a_plain_file_is_an_error(tmp_path):
    a = _write(tmp_path, "rows", 4)
    with pytest.raises(DatasetError, match="data-config YAML"):
        read_val_datasets(a, str(tmp_path), "counting")


def test_sampling_counts_bad_rows_as_their_loader_does(tmp_path):
    """Sampling picks among every row of the entry (their loaders never look inside rows); bad ones are
    then skipped (skip_bad) or raised -- so the good rows kept are the same as with the file's bad rows fixed."""
    rows = [{"image": f"{i}.png", "problem": f"q{i}", "solution": i % 5} for i in range(10)]
    rows[3].pop("problem")  # a bad row
    file = tmp_path / "mixed.jsonl"
    file.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"train_datasets": [{"json_path": str(file), "sampling_strategy": "random:6"}]}),
                    encoding="utf-8")
    got = read_training_files([str(path)], str(tmp_path), "counting", check_images="none", skip_bad=True, seed=3)
    order = list(range(10))
    random.Random(3).shuffle(order)
    expected = [f"q{i}" for i in order[:6] if i != 3]
    assert _problems(got) == expected and len(got.skipped) == (3 in order[:6])
