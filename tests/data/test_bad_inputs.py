"""Bad inputs the training readers must name (file:line) or skip and count: images the processor cannot
take, bytes that are not UTF-8, gold answers a task cannot score."""

import io
import json

import pytest
from PIL import Image

from paddlemix_r1.data.readers import DatasetError, image_size_problem, read_training_files
from paddlemix_r1.processing.image_processor import ImageProcessor


def noise_bytes(fmt, size=(64, 64)):
    buf = io.BytesIO()
    Image.effect_noise(size, 40).convert("RGB").save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture
def images(tmp_path):
    """good.png, a PNG and a JPEG cut in half (headers intact), and a 5000x10 strip."""
    root = tmp_path / "img"
    root.mkdir()
    Image.new("RGB", (64, 48), (10, 20, 30)).save(root / "good.png")
    png, jpeg = noise_bytes("PNG"), noise_bytes("JPEG")
    (root / "cut.png").write_bytes(png[: len(png) // 2])
    (root / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    Image.new("RGB", (5000, 10), (200, 0, 0)).save(root / "strip.png")
    return root


def counting_rows(*names):
    return [{"image": name, "problem": "How many?", "solution": 2} for name in names]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.mark.parametrize("name, reason", [
    ("cut.png", "cannot decode image"),
    ("cut.jpg", "cannot decode image"),
    ("strip.png", r"5000x10.*aspect ratio"),
], ids=["truncated-png", "truncated-jpeg", "5000x10"])
def test_images_the_processor_cannot_take_are_refused_when_read(tmp_path, images, name, reason):
    path = write_jsonl(tmp_path / "rows.jsonl", counting_rows("good.png", name, "good.png"))
    # the default check decodes every image and asks the processor's size rule
    with pytest.raises(DatasetError, match=rf"rows.jsonl:2: field 'image': .*{reason}"):
        read_training_files([str(path)], str(images), "counting")
    rows = read_training_files([str(path)], str(images), "counting", skip_bad=True)
    assert len(rows) == 2 and len(rows.skipped) == 1 and rows.skipped[0].startswith(f"{path}:2: ")
    # switched off, the rows are taken as they are (the option the config passes through)
    assert len(read_training_files([str(path)], str(images), "counting", check_images=False)) == 3


def test_every_image_the_check_passes_goes_through_the_processor(images):
    processor = ImageProcessor()
    for name in ("good.png",):
        processor([str(images / name)])
    assert image_size_problem(64, 48) is None
    assert image_size_problem(10, 1999) is None  # ratio 199.9: the processor takes it
    with pytest.raises(ValueError):
        processor([Image.new("RGB", (10, 2001))])
    assert "aspect ratio" in image_size_problem(10, 2001)
    assert image_size_problem(0, 10) is not None


def test_image_stored_in_a_shard_is_checked_too(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    strip = io.BytesIO()
    Image.new("RGB", (10, 5000)).save(strip, format="PNG")
    good = io.BytesIO()
    Image.new("RGB", (32, 32)).save(good, format="PNG")
    table = pa.table({"image": [{"bytes": good.getvalue(), "path": None}, {"bytes": strip.getvalue(), "path": None}],
                      "problem": ["How many?"] * 2, "solution": ["<answer> 1 </answer>"] * 2})
    path = tmp_path / "train.parquet"
    pq.write_table(table, path)
    with pytest.raises(DatasetError, match=r"train.parquet:row 1: field 'image': .*10x5000"):
        read_training_files([str(path)], "", "counting", cache_dir=str(tmp_path / "c"))


def test_a_non_utf8_byte_names_its_line_and_can_be_skipped(tmp_path, images):
    lines = [json.dumps(r).encode() for r in counting_rows("good.png", "good.png", "good.png")]
    lines[1] = lines[1].replace(b"How many?", b"How many\xff?")
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    column = lines[1].index(b"\xff") + 1
    with pytest.raises(DatasetError, match=rf"rows.jsonl:2: not UTF-8 text \(byte 0xff at column {column}\)"):
        read_training_files([str(path)], str(images), "counting")
    rows = read_training_files([str(path)], str(images), "counting", skip_bad=True)
    assert [r["id"] for r in rows] == ["rows/0", "rows/2"] and len(rows.skipped) == 1


def test_a_non_utf8_byte_in_a_json_list(tmp_path, images):
    text = json.dumps(counting_rows("good.png", "good.png", "good.png"), indent=1).encode()
    bad = text.replace(b"How many?", b"How \xc3many?", 2).replace(b"How \xc3many?", b"How many?", 1)
    path = tmp_path / "rows.json"
    path.write_bytes(bad)
    line = bad[: bad.index(b"\xc3")].count(b"\n") + 1
    with pytest.raises(DatasetError, match=rf"rows.json:{line}: not UTF-8 text"):
        read_training_files([str(path)], str(images), "counting")
    rows = read_training_files([str(path)], str(images), "counting", skip_bad=True)
    assert [r["id"] for r in rows] == ["rows/0", "rows/2"]
    assert rows.skipped[0].startswith(f"{path}:{line}: not UTF-8 text")
    # outside a string the file cannot be read on: the error still names the line
    path.write_bytes(text.replace(b"[", b"[\xff", 1))
    with pytest.raises(DatasetError, match=r"rows.json:1: not UTF-8 text"):
        read_training_files([str(path)], str(images), "counting", skip_bad=True)


def test_non_utf8_data_config(tmp_path):
    path = tmp_path / "data.yaml"
    path.write_bytes(b"datasets:\n  - json_path: caf\xe9.jsonl\n")
    with pytest.raises(DatasetError, match=r"data.yaml:2: not UTF-8 text"):
        read_training_files([str(path)], "", "counting")


@pytest.mark.parametrize("task, gold, message", [
    ("counting", -3, "count must be >= 0"),
    ("counting", "<answer> -1 </answer>", "count must be >= 0"),
    ("rec", [float("nan"), 1, 2, 3], "finite"),
    ("rec", [30, 1, 2, 3], r"x2 > x1"),
    ("rec", [1, 30, 2, 3], r"y2 > y1"),
    ("rec", "[5, 5, 5, 9]", r"x2 > x1"),
    ("detection", "<answer>[30, 1, 2, 3]</answer>", r"x2 > x1"),
], ids=["count-negative", "count-negative-text", "rec-nan", "rec-inverted-x", "rec-inverted-y", "rec-empty-text",
        "detection-inverted"])
def test_golds_a_task_cannot_score_are_bad_rows(tmp_path, images, task, gold, message):
    rows = [{"image": "good.png", "problem": "p", "solution": s, "task": task} for s in (gold, gold)]
    rows.insert(1, {"image": "good.png", "problem": "p", "solution": 1 if task == "counting" else [1, 2, 3, 4],
                    "task": "counting" if task == "counting" else "rec"})
    path = write_jsonl(tmp_path / "rows.jsonl", rows)
    with pytest.raises(DatasetError, match=rf"rows.jsonl:1: field 'solution': .*{message}"):
        read_training_files([str(path)], str(images), task)
    kept = read_training_files([str(path)], str(images), task, skip_bad=True)
    assert len(kept) == 1 and [s.split(": ")[0] for s in kept.skipped] == [f"{path}:1", f"{path}:3"]
