"""Training-set readers on fixture files written here: every format, multi-image, bad rows, EXIF."""

import io
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from paddlemix_r1.data.readers import (
    DatasetError,
    TrainingRows,
    dataset_dir_files,
    detect_format,
    iter_json_list,
    load_row_images,
    read_training_files,
)


def save_image(path, size=(40, 30), color=(200, 30, 30), fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, format=fmt)
    return path


def png_bytes(size=(24, 16), color=(10, 200, 10)):
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def exif_rotated_jpeg():
    """A JPEG stored sideways with EXIF orientation 6, and the upright image it should show."""
    upright = Image.new("RGB", (48, 24), (255, 0, 0))
    upright.paste((0, 0, 255), (24, 0, 48, 24))  # left red, right blue
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # 24 x 48 on disk
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    buf = io.BytesIO()
    stored.save(buf, format="JPEG", exif=exif, quality=95)
    return buf.getvalue(), upright


def assert_upright(image, upright):
    assert image.size == upright.size and image.mode == "RGB"
    left, right = image.getpixel((4, 12)), image.getpixel((44, 12))
    assert left[0] > 200 and left[2] < 60, left
    assert right[2] > 200 and right[0] < 60, right


REC = [
    {"image": "train2014/a.jpg", "problem": "Where is the red car?", "normal_caption": "red car",
     "solution": [10, 20, 30.5, 40]},
    {"image": "train2014/b.png", "problem": "Where is the dog?", "normal_caption": "dog",
     "solution": [1, 2, 3, 4]},
]


@pytest.fixture
def coco(tmp_path):
    root = tmp_path / "coco"
    save_image(root / "train2014" / "a.jpg", (64, 48))
    save_image(root / "train2014" / "b.png", (50, 40))
    return root


def write_json(path, rows, indent=2):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows, indent=indent), encoding="utf-8")
    return path


def write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def test_rec_json(tmp_path, coco):
    path = write_json(tmp_path / "rec_jsons_processed" / "refcoco_train.json", REC)
    rows = read_training_files([str(path)], str(coco), task="rec")
    assert isinstance(rows, TrainingRows) and isinstance(rows, list) and rows.skipped == []
    assert rows[0] == {"id": "refcoco_train/0", "images": [str(coco / "train2014" / "a.jpg")],
                       "problem": "Where is the red car?", "solution": [10.0, 20.0, 30.5, 40.0], "task": "rec",
                       "normal_caption": "red car", "accu_reward_method": "default"}
    assert rows[1]["id"] == "refcoco_train/1" and rows[1]["solution"] == [1.0, 2.0, 3.0, 4.0]


def test_yaml_data_config_with_sampling(tmp_path, coco, monkeypatch):
    data = tmp_path / "data"
    write_json(data / "rec_jsons_processed" / "refcoco_train.json", REC * 3)
    write_json(data / "rec_jsons_processed" / "refcocog_train.json", REC)
    config = tmp_path / "configs" / "rec.yaml"
    config.parent.mkdir()
    # paths relative to the working directory, as PaddleMIX's rec.yaml writes them
    config.write_text(
        "datasets:\n"
        "  - json_path: data/rec_jsons_processed/refcoco_train.json\n"
        "    sampling_strategy: first:4\n"
        "  - json_path: data/rec_jsons_processed/refcocog_train.json\n"
        "    sampling_strategy: random:50%\n"
        f"    image_root: {coco}\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    rows = read_training_files([str(config)], str(coco), task="rec", seed=3)
    assert [r["id"] for r in rows[:4]] == [f"refcoco_train/{i}" for i in range(4)]
    assert len(rows) == 5 and rows[4]["id"].startswith("refcocog_train/")
    again = read_training_files([str(config)], str(coco), task="rec", seed=3)
    assert [r["id"] for r in again] == [r["id"] for r in rows]


def test_yaml_errors(tmp_path, coco):
    config = tmp_path / "rec.yaml"
    config.write_text("datasets:\n  - json_path: nowhere.json\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"rec.yaml: datasets\[0\]: data file 'nowhere.json' not found"):
        read_training_files([str(config)], str(coco), task="rec")
    write_json(tmp_path / "a.json", REC)
    config.write_text("datasets:\n  - json_path: a.json\n    sampling_strategy: some:3\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="sampling_strategy"):
        read_training_files([str(config)], str(coco), task="rec")  # a.json found beside the yaml
    config.write_text("files: [a.json]\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="'datasets:' list"):
        read_training_files([str(config)], str(coco), task="rec")


def test_vlm_r1_jsonl_multi_image_and_colon_separated_paths(tmp_path):
    folder_a, folder_b = tmp_path / "imgs_a", tmp_path / "imgs_b"
    save_image(folder_a / "clevr" / "1.png")
    save_image(folder_a / "clevr" / "2.png")
    save_image(folder_b / "x.jpg")
    a = write_jsonl(tmp_path / "a.jsonl", [
        {"id": 1, "image": ["clevr/1.png", "clevr/2.png"], "accu_reward_method": "default",
         "conversations": [{"from": "human", "value": "<image><image>How many balls in total?"},
                           {"from": "gpt", "value": "<answer> 3 </answer>"}]},
    ])
    b = write_jsonl(tmp_path / "b.jsonl", [
        {"id": 7, "image": "x.jpg",
         "conversations": [{"from": "human", "value": "<image>How many cubes?"}, {"from": "gpt", "value": "0"}]},
    ])
    rows = read_training_files([f"{a}:{b}"], f"{folder_a}:{folder_b}", task="counting")
    assert rows[0]["images"] == [str(folder_a / "clevr" / "1.png"), str(folder_a / "clevr" / "2.png")]
    assert rows[0]["problem"] == "How many balls in total?" and rows[0]["solution"] == 3
    assert rows[0]["id"] == "a/1" and rows[0]["accu_reward_method"] == "default"
    assert rows[1] == {"id": "b/7", "images": [str(folder_b / "x.jpg")], "problem": "How many cubes?",
                       "solution": 0, "task": "counting", "accu_reward_method": "default"}  # VLM-R1's default
    with pytest.raises(ValueError, match="2 data files but 3 image roots"):
        read_training_files([str(a), str(b)], ["x", "y", "z"], task="counting")


def test_placeholder_count_must_match_images(tmp_path):
    save_image(tmp_path / "1.png")
    path = write_jsonl(tmp_path / "a.jsonl", [
        {"image": "1.png", "conversations": [{"from": "human", "value": "<image><image>How many?"},
                                             {"from": "gpt", "value": "2"}]}])
    with pytest.raises(DatasetError, match=r"a.jsonl:1: the question has 2 <image> placeholders for 1 images"):
        read_training_files([str(path)], str(tmp_path), task="counting")


def test_r1v_test_jsonl(tmp_path):
    save_image(tmp_path / "superclevr_200" / "images" / "s1.png")
    save_image(tmp_path / "Geo170K" / "images" / "test" / "g1.png")
    counting = write_jsonl(tmp_path / "superclevr_test200_counting_problems.jsonl", [
        {"image_path": "./images/s1.png", "question": "How many items are there in the image?", "ground_truth": 4}])
    geo = write_jsonl(tmp_path / "geoqa_test_prompts.jsonl", [
        {"image_path": "./Geo170K/images/test/g1.png", "question": "Find angle C.", "ground_truth": "140°"}])
    rows = read_training_files([str(counting)], str(tmp_path / "superclevr_200"), task="counting")
    assert rows[0]["images"] == [str(tmp_path / "superclevr_200" / "images" / "s1.png")]
    assert rows[0]["solution"] == 4 and rows[0]["problem"] == "How many items are there in the image?"
    rows = read_training_files([str(geo)], str(tmp_path), task="geoqa")
    assert rows[0]["solution"] == "140°" and rows[0]["task"] == "geoqa"


def hf_image_table(rows):
    """A table shaped like an HF-datasets Image feature: image = struct<bytes, path>."""
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    return pa.table({
        "image": pa.array([r["image"] for r in rows], type=image_type),
        "thinking": pa.array([r.get("thinking", "") for r in rows]),
        "problem": pa.array([r["problem"] for r in rows]),
        "solution": pa.array([r["solution"] for r in rows]),
    })


def test_parquet_shard_with_image_bytes(tmp_path):
    jpeg, upright = exif_rotated_jpeg()
    table = hf_image_table([
        {"image": {"bytes": png_bytes(), "path": "a.png"}, "problem": "How many items?", "solution": "<answer> 3 </answer>",
         "thinking": "three"},
        {"image": {"bytes": jpeg, "path": None}, "problem": "How many cubes?", "solution": "<answer>0</answer>"},
    ])
    folder = tmp_path / "clevr_cogen_a_train" / "data"
    folder.mkdir(parents=True)
    pq.write_table(table, folder / "train-00000-of-00001.parquet")
    pq.write_table(table.slice(0, 1), folder / "test-00000-of-00001.parquet")  # another split: not read
    cache = tmp_path / "cache"
    rows = read_training_files([str(tmp_path / "clevr_cogen_a_train")], "", task="counting", cache_dir=str(cache))
    assert [r["solution"] for r in rows] == [3, 0]
    assert rows[0]["id"] == "train-00000-of-00001/0" and rows[0]["thinking"] == "three"
    assert all(str(cache) in p for r in rows for p in r["images"])
    assert rows[0]["images"][0].endswith(".png") and rows[1]["images"][0].endswith(".jpg")
    assert load_row_images(rows[0])[0].size == (24, 16)
    assert_upright(load_row_images(rows[1])[0], upright)  # EXIF orientation applied
    # a second read reuses the written files
    mtime = os.path.getmtime(rows[0]["images"][0])
    again = read_training_files([str(tmp_path / "clevr_cogen_a_train")], "", task="counting", cache_dir=str(cache))
    assert again == rows and os.path.getmtime(rows[0]["images"][0]) == mtime


def test_arrow_shards_and_geoqa_solutions(tmp_path):
    table = hf_image_table([{"image": {"bytes": png_bytes(), "path": None}, "problem": "Find x.",
                             "solution": "<answer>2√{3}</answer>"}])
    stream = tmp_path / "geo" / "data-00000-of-00001.arrow"
    stream.parent.mkdir()
    with pa.OSFile(str(stream), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    ipc_file = tmp_path / "shard.arrow"
    with pa.OSFile(str(ipc_file), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    assert detect_format(str(stream)) == "arrow" and detect_format(str(ipc_file)) == "arrow"
    rows = read_training_files([str(tmp_path / "geo"), str(ipc_file)], "", task="geoqa",
                               cache_dir=str(tmp_path / "cache"))
    assert [r["solution"] for r in rows] == ["2√{3}", "2√{3}"]


def test_parquet_bad_rows_name_the_row(tmp_path):
    table = hf_image_table([
        {"image": {"bytes": png_bytes(), "path": None}, "problem": "How many?", "solution": "<answer> 2 </answer>"},
        {"image": {"bytes": b"\x89PNG broken", "path": None}, "problem": "How many?", "solution": "1"},
        {"image": {"bytes": png_bytes(), "path": None}, "problem": "How many?", "solution": "many"},
    ])
    path = tmp_path / "train.parquet"
    pq.write_table(table, path)
    with pytest.raises(DatasetError, match=r"train.parquet:row 1: field 'image': cannot decode the image bytes"):
        read_training_files([str(path)], "", task="counting", cache_dir=str(tmp_path / "c"))
    rows = read_training_files([str(path)], "", task="counting", skip_bad=True, cache_dir=str(tmp_path / "c"))
    assert [r["solution"] for r in rows] == [2]
    assert len(rows.skipped) == 2
    assert rows.skipped[0].startswith(f"{path}:row 1:") and rows.skipped[1].startswith(f"{path}:row 2:")
    assert "gold count must be an integer" in rows.skipped[1]


@pytest.mark.parametrize("row, message", [
    ({"problem": "p", "solution": [1, 2, 3, 4]}, "missing field 'image'"),
    ({"image": "train2014/a.jpg", "solution": [1, 2, 3, 4]}, "missing field 'problem'"),
    ({"image": "train2014/a.jpg", "problem": "p"}, "missing field 'solution'"),
    ({"image": "train2014/a.jpg", "problem": "p", "solution": [1, 2, 3]}, "4 numbers"),
    ({"image": "train2014/missing.jpg", "problem": "p", "solution": [1, 2, 3, 4]}, "image file not found"),
    ({"image": "train2014/broken.jpg", "problem": "p", "solution": [1, 2, 3, 4]}, "cannot decode image"),
    ({"image": [], "problem": "p", "solution": [1, 2, 3, 4]}, "empty list"),
], ids=["no-image", "no-problem", "no-solution", "bad-box", "missing-image", "broken-image", "empty-images"])
def test_bad_json_rows_fail_with_file_and_line(tmp_path, coco, row, message):
    (coco / "train2014" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    path = tmp_path / "rec.json"
    path.write_text("[\n" + ",\n".join(json.dumps(r) for r in (REC[0], row, REC[1])) + "\n]\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=rf"rec.json:3: .*{message}"):  # the bad row is on line 3
        read_training_files([str(path)], str(coco), task="rec")
    rows = read_training_files([str(path)], str(coco), task="rec", skip_bad=True)
    assert [r["id"] for r in rows] == ["rec/0", "rec/2"]
    assert len(rows.skipped) == 1 and rows.skipped[0].startswith(f"{path}:3: ")


def test_jsonl_invalid_line_skip_and_count(tmp_path, coco, caplog):
    good = {"image": "train2014/a.jpg", "problem": "p", "solution": [1, 2, 3, 4]}
    path = write_jsonl(tmp_path / "rows.jsonl", [good, '{"image": ', good, "[1, 2]", "", good])
    with pytest.raises(DatasetError, match=r"rows.jsonl:2: invalid JSON"):
        read_training_files([str(path)], str(coco), task="rec")
    with caplog.at_level("WARNING"):
        rows = read_training_files([str(path)], str(coco), task="rec", skip_bad=True)
    assert len(rows) == 3 and len(rows.skipped) == 2
    assert rows.skipped[1].startswith(f"{path}:4: row must be a JSON object")
    assert "skipped 2 bad row(s)" in caplog.text


def test_exif_rotated_jpeg_comes_out_upright(tmp_path):
    jpeg, upright = exif_rotated_jpeg()
    (tmp_path / "photo.jpg").write_bytes(jpeg)
    path = write_json(tmp_path / "rec.json", [{"image": "photo.jpg", "problem": "p", "solution": [0, 0, 5, 5]}])
    for mode in ("open", "decode"):
        rows = read_training_files([str(path)], str(tmp_path), task="rec", check_images=mode)
        assert_upright(load_row_images(rows[0])[0], upright)


def test_decode_check_catches_truncated_image(tmp_path):
    buf = io.BytesIO()
    Image.effect_noise((64, 64), 40).convert("RGB").save(buf, format="PNG")
    (tmp_path / "cut.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])  # header intact
    path = write_json(tmp_path / "rec.json", [{"image": "cut.png", "problem": "p", "solution": [0, 0, 5, 5]}])
    assert read_training_files([str(path)], str(tmp_path), task="rec", check_images="open")
    with pytest.raises(DatasetError, match=r"rec.json:2: field 'image': cannot decode image"):
        read_training_files([str(path)], str(tmp_path), task="rec", check_images="decode")


def test_nothing_left_and_unknown_inputs(tmp_path, coco):
    path = write_json(tmp_path / "rec.json", [{"image": "gone.jpg", "problem": "p", "solution": [0, 0, 1, 1]}])
    with pytest.raises(DatasetError, match=r"no usable rows .* \(1 skipped\)"):
        read_training_files([str(path)], str(coco), task="rec", skip_bad=True)
    with pytest.raises(DatasetError, match="data file not found"):
        read_training_files([str(tmp_path / "nope.json")], str(coco), task="rec")
    (tmp_path / "notes.txt").write_text("hello", encoding="utf-8")
    with pytest.raises(DatasetError, match="unsupported data file"):
        read_training_files([str(tmp_path / "notes.txt")], str(coco), task="rec")
    with pytest.raises(ValueError, match="unknown task .ocr.; tasks: .*counting, .*geoqa, .*rec"):
        read_training_files([str(path)], str(coco), task="ocr")


def test_format_detection_by_content(tmp_path):
    write_json(tmp_path / "list.json", REC)
    write_jsonl(tmp_path / "lines.json", REC)  # JSONL under a .json name
    (tmp_path / "cfg.yml").write_text("datasets: []\n", encoding="utf-8")
    pq.write_table(pa.table({"a": [1]}), tmp_path / "noext")
    assert [detect_format(str(tmp_path / n)) for n in ("list.json", "lines.json", "cfg.yml", "noext")] == \
        ["json", "jsonl", "yaml", "parquet"]
    assert detect_format(str(tmp_path)) == "hf_dir"


def test_dataset_dir_prefers_train_split_and_skips_hidden(tmp_path):
    for rel in ("data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet",
                "data/test-00000-of-00001.parquet", ".cache/huggingface/x.parquet"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({"a": [1]}), tmp_path / rel)
    assert [os.path.relpath(p, tmp_path) for p in dataset_dir_files(str(tmp_path))] == \
        ["data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet"]


def test_iter_json_list_lines():
    text = '[\n  {"a": 1},\n\n  {"a": 2}, {"a": 3}\n]\n'
    assert list(iter_json_list(text, "f.json")) == [(2, {"a": 1}), (4, {"a": 2}), (4, {"a": 3})]
    assert list(iter_json_list(" [ ] ", "f.json")) == []
    with pytest.raises(DatasetError, match=r"f.json:3: expected ',' or ']'"):
        list(iter_json_list('[\n{"a": 1}\n{"a": 2}]', "f.json"))


def conversation_row(image, question, answer, **extra):
    images = image if isinstance(image, list) else [image]
    return {"image": image, "conversations": [{"from": "human", "value": "<image>" * len(images) + question},
                                              {"from": "gpt", "value": answer}], **extra}


def test_rows_name_their_task_so_one_file_mixes_tasks(tmp_path):
    save_image(tmp_path / "1.png")
    path = write_jsonl(tmp_path / "mixed.jsonl", [
        {"image": "1.png", "problem": "Where is the cat?", "solution": "[1, 2, 3, 4]", "task": "rec"},
        {"image": "1.png", "problem": "How many cats?", "solution": "<answer> 2 </answer>", "task": "counting"},
        {"image": "1.png", "problem": "Is it a cat?", "solution": "<answer> yes </answer>"},  # the default task
    ])
    rows = read_training_files([str(path)], str(tmp_path), task="general")
    assert [(r["task"], r["solution"]) for r in rows] == [
        ("rec", [1.0, 2.0, 3.0, 4.0]), ("counting", 2), ("general", "yes")]
    bad = write_jsonl(tmp_path / "bad.jsonl", [
        {"image": "1.png", "problem": "p", "solution": "3", "task": "counting"},
        {"image": "1.png", "problem": "p", "solution": "3", "task": "ocr"},
    ])
    with pytest.raises(DatasetError, match=r"bad.jsonl:2: field 'task' must name a task \(.*classify, counting, detection, .*general.*\), got 'ocr'"):
        read_training_files([str(bad)], str(tmp_path), task="counting")
    bad.write_text(json.dumps({"image": "1.png", "problem": "p", "solution": "many", "task": "counting"}) + "\n")
    with pytest.raises(DatasetError, match=r"bad.jsonl:1: field 'solution': gold count must be an integer"):
        read_training_files([str(bad)], str(tmp_path), task="general")


def test_vlm_r1_reward_method_per_file_and_row_override(tmp_path):
    for folder in ("A", "B"):
        save_image(tmp_path / folder / "x.png")
        save_image(tmp_path / folder / "y.png")
    a = write_jsonl(tmp_path / "a.jsonl", [
        conversation_row("x.png", "Which one? A. cat B. dog", "<answer> B </answer>"),
        conversation_row(["x.png", "y.png"], "Same defect?", "<answer>button overlap</answer>",
                         accu_reward_method="all_match"),
    ])
    b = write_jsonl(tmp_path / "b.jsonl", [conversation_row("y.png", "Is it red?", "yes")])
    rows = read_training_files([f"{a}:{b}"], f"{tmp_path / 'A'}:{tmp_path / 'B'}", task="general",
                               reward_methods="mcq:yes_no")
    assert [(r["solution"], r["accu_reward_method"]) for r in rows] == [
        ("B", "mcq"), ("button overlap", "all_match"), ("yes", "yes_no")]
    assert rows[1]["images"] == [str(tmp_path / "A" / "x.png"), str(tmp_path / "A" / "y.png")]
    assert rows[1]["problem"] == "Same defect?"
    default = read_training_files([str(b)], str(tmp_path / "B"), task="general")
    assert default[0]["accu_reward_method"] == "default"  # no reward method for the file: VLM-R1's default
    with pytest.raises(ValueError, match="got 2 data files but 1 reward methods"):
        read_training_files([f"{a}:{b}"], str(tmp_path / "A"), task="general", reward_methods="mcq")
    bad = write_jsonl(tmp_path / "bad.jsonl", [conversation_row("x.png", "q", "B", accu_reward_method="odlength")])
    with pytest.raises(DatasetError, match=r"bad.jsonl:1: field 'accu_reward_method' must be one of the accuracy "
                                           r"methods \(default, mcq"):
        read_training_files([str(bad)], str(tmp_path / "A"), task="general")


def test_image_checks_can_be_left_to_the_caller(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [{"image_path": "gone.png", "question": "q", "ground_truth": 2}])
    with pytest.raises(DatasetError, match="a.jsonl:1: field 'image_path': image file not found"):
        read_training_files([str(path)], str(tmp_path), task="counting")
    rows = read_training_files([str(path)], str(tmp_path), task="counting", check_images="none")
    assert rows[0]["images"] == [str(tmp_path / "gone.png")]
