"""ViRL39K reader on generated parquet files: DeepScaleR dropped, <image> fixed, areas resized, bad rows named."""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from paddlemix_r1.data.virl39k import read_virl39k, resized_size


def _write(tmp_path, rows):
    for name, size in (("a.png", (600, 600)), ("big.png", (2200, 2100)), ("small.png", (100, 80))):
        Image.new("RGB", size, (200, 30, 30)).save(tmp_path / name)
    path = str(tmp_path / "39Krelease.parquet")
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def _row(qid, question, images, answer="\\boxed{60}", source="MMK12"):
    return {"qid": qid, "question": question, "answer": answer, "image": images, "source": source,
            "category": "math", "PassRate_32BTrained": 0.5, "PassRate_7BBase": 0.25}


def test_filters_tag_fix_and_resize(tmp_path):
    path = _write(tmp_path, [
        _row("q0", "<image>What is the angle?", ["a.png"]),
        _row("q1", "What is x?", ["a.png"]),                       # no tag: prepended
        _row("q2", "Solve 1+1.", ["a.png"], source="DeepScaleR"),  # dropped
        _row("q3", "<image> and <image>: which is larger?", ["big.png", "small.png"]),
    ])
    out = read_virl39k(path, cache_dir=str(tmp_path / "cache"))
    assert [r["id"] for r in out.rows] == ["q0", "q1", "q3"] and out.dropped == 1 and out.tags_added == 1
    q1 = out.rows[1]
    assert q1["question"] == "<image>What is x?" and q1["problem"] == "What is x?"
    assert q1["solution"] == "60" and q1["task"] == "captioner" and q1["category"] == "math"
    assert q1["images"] == [str(tmp_path / "a.png")]  # in range: used as it is
    big, small = (Image.open(p) for p in out.rows[2]["images"])
    assert big.size == resized_size(2200, 2100) and big.width * big.height <= 2048 * 2048
    assert small.size == resized_size(100, 80) and small.width > 100
    assert all(os.path.dirname(p) == str(tmp_path / "cache") for p in out.rows[2]["images"])


def test_bad_rows_are_named_or_skipped(tmp_path):
    path = _write(tmp_path, [
        _row("ok", "<image>Fine?", ["a.png"]),
        _row("two", "Two images, no tag", ["a.png", "a.png"]),    # still off after the fix
        _row("gone", "<image>Where?", ["missing.png"]),
        _row("empty", "<image>Q", ["a.png"], answer=""),
    ])
    with pytest.raises(ValueError, match=r"39Krelease\.parquet:row 1: the question has 1 <image> tags for 2 images"):
        read_virl39k(path)
    out = read_virl39k(path, skip_bad=True)
    assert [r["id"] for r in out.rows] == ["ok"]
    assert [s.split(": ")[0].rsplit(":", 1)[-1] for s in out.skipped] == ["row 1", "row 2", "row 3"]
    assert "image file not found" in out.skipped[1] and "gold answer is empty" in out.skipped[2]
