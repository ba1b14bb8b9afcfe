"""Result files are written whole or not at all (paddlemix_r1/atomic.py)."""

from __future__ import annotations

import json
import os

import pytest

from paddlemix_r1 import atomic


def test_json_and_jsonl_round_trip_into_new_directories(tmp_path) -> None:
    path = str(tmp_path / "a" / "b" / "summary.json")
    assert atomic.write_json(path, {"accuracy": 0.5, "name": "é"}, ensure_ascii=False) == path
    text = open(path, encoding="utf-8").read()
    assert text.endswith("}\n") and json.loads(text) == {"accuracy": 0.5, "name": "é"}
    rows = [{"id": 1, "text": "中文"}, {"id": 2}]
    atomic.write_jsonl(str(tmp_path / "rows.jsonl"), rows)
    lines = open(tmp_path / "rows.jsonl", encoding="utf-8").read().splitlines()
    assert [json.loads(x) for x in lines] == rows and "中文" in lines[0]


@pytest.mark.parametrize("failure", [TypeError, KeyboardInterrupt])
def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, failure) -> None:
    """Half the new content is written, then the writer fails (an unserialisable value; a Ctrl-C): the old
    file stays as it was, and no temporary file is left in the directory."""
    path = str(tmp_path / "state.json")
    atomic.write_json(path, {"step": 1})

    def write(f) -> None:
        f.write('{"step": 2, "half')
        raise failure("stopped")

    with pytest.raises(failure):
        atomic.write_file(path, write)
    with pytest.raises(TypeError):
        atomic.write_json(path, {"step": 3, "bad": object()})
    assert json.load(open(path)) == {"step": 1}
    assert os.listdir(tmp_path) == ["state.json"]


def test_binary_files(tmp_path) -> None:
    path = str(tmp_path / "blob.bin")
    atomic.write_file(path, lambda f: f.write(b"\x00\x01"), binary=True)
    assert open(path, "rb").read() == b"\x00\x01"
