"""The eval CLIs: flags, main() wiring with an injected generator, early data errors."""

import json

import pytest

from paddlemix_r1.eval import cli
from paddlemix_r1.eval.data import DatasetError

FLAGS = [
    "--model_name",
    "--method",
    "--model_path",
    "--data_root",
    "--image_root",
    "--test_datasets",
    "--batch_size",
    "--sample_num",
    "--steps",
    "--seed",
    "--dtype",
    "--output_dir",
    "--max_new_tokens",
    "--num_samples",
    "--min_pixels",
    "--max_pixels",
]


@pytest.mark.parametrize("main", [cli.main_rec, cli.main_r1v])
def test_help_lists_the_flags(main, capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for flag in FLAGS:
        assert flag in text


def test_readme_command_parses():
    args = cli.rec_parser().parse_args(
        [
            "--model_name",
            "Qwen2.5-VL-3B-Instruct",
            "--method",
            "baseline",
            "--model_path",
            "Qwen/Qwen2.5-VL-3B-Instruct",
            "--data_root",
            "data/rec_jsons_processed",
            "--image_root",
            "data/coco",
            "--test_datasets",
            "refcoco_val",
            "refcocop_val",
            "refcocog_val",
            "--batch_size",
            "32",
            "--sample_num",
            "500",
            "--steps",
            "300",
            "--seed",
            "42",
            "--dtype",
            "float16",
        ]
    )
    assert args.test_datasets == ["refcoco_val", "refcocop_val", "refcocog_val"]
    assert (args.method, args.batch_size, args.sample_num, args.steps, args.seed) == ("baseline", 32, 500, 300, 42)
    with pytest.raises(SystemExit):
        cli.rec_parser().parse_args(["--method", "sft", "--model_path", "m", "--data_root", "d", "--image_root", "i"])


def write_checkpoint(path, model_type="qwen2_5_vl", **pixels):
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({"model_type": model_type}))
    (path / "preprocessor_config.json").write_text(json.dumps({"min_pixels": 3136, "max_pixels": 1003520, **pixels}))
    return path


class Recorder:
    def __init__(self, outputs):
        self.outputs = outputs
        self.args = None

    def build(self, args, image_processor=None):
        self.args, self.image_processor = args, image_processor
        return lambda samples: [self.outputs[s.row.id] for s in samples for _ in range(args.num_samples)]


def test_main_rec_end_to_end(rec_set, tmp_path, monkeypatch, capsys):
    path, root = rec_set
    ckpt = write_checkpoint(tmp_path / "ckpt")
    outputs = {
        "tiny_rec/0": "<answer>[101, 99, 302, 198]</answer>",  # 640x480 -> 644x476: right
        "tiny_rec/1": "<answer>[0, 0, 1, 1]</answer>",
        "tiny_rec/2": "<answer>[31, 39, 154, 157]</answer>",  # 300x200 -> 308x196: right
    }
    recorder = Recorder(outputs)
    monkeypatch.setattr(cli, "build_generate_fn", recorder.build)
    out = tmp_path / "logs"
    argv = [
        "--model_path",
        str(ckpt),
        "--data_root",
        str(path.parent),
        "--image_root",
        str(root),
        "--test_datasets",
        "tiny_rec",
        "--output_dir",
        str(out),
        "--steps",
        "7",
        "--batch_size",
        "2",
    ]
    assert cli.main_rec(argv) == 0
    printed = capsys.readouterr().out
    assert "tiny_rec" in printed and "40.00%" in printed  # 2 of 5 (2 rows have image errors)
    assert recorder.image_processor.max_pixels == 1003520
    assert recorder.args.max_new_tokens == 256
    summary = json.loads((out / "tiny_rec_qwen2.5-vl-3b-instruct_r1_7.summary.json").read_text())
    assert (summary["n"], summary["correct"], summary["errors"]) == (5, 2, 2)
    assert summary["settings"]["sample_num"] == 500 and summary["settings"]["seed"] == 42
    table = json.loads((out / "summary_qwen2.5-vl-3b-instruct_r1_7.json").read_text())
    assert [t["dataset"] for t in table] == ["tiny_rec"]


def test_main_r1v_infers_tasks(counting_set, geoqa_set, tmp_path, monkeypatch):
    (cpath, _), (gpath, _) = counting_set, geoqa_set
    assert cpath.parent == gpath.parent
    # both sets share one image root in this test: point it at tmp_path and use relative dirs
    for p, sub in ((cpath, "clevr"), (gpath, "geo")):
        lines = [json.loads(line) for line in p.read_text().splitlines()]
        p.write_text("".join(json.dumps({**r, "image_path": f"{sub}/{r['image_path'][2:]}"}) + "\n" for r in lines))
    outputs = {
        "superclevr_tiny/0": "<answer>3</answer>",
        "superclevr_tiny/1": "<answer>4</answer>",
        "superclevr_tiny/2": "<answer>7</answer>",
        "geoqa_tiny/0": "<answer>140</answer>",
        "geoqa_tiny/1": "<answer>2</answer>",
        "geoqa_tiny/2": "<answer>\\frac{4}{3}</answer>",
    }
    recorder = Recorder(outputs)
    monkeypatch.setattr(cli, "build_generate_fn", recorder.build)
    argv = [
        "--model_path",
        str(tmp_path / "no_ckpt_needed"),
        "--data_root",
        str(cpath.parent),
        "--image_root",
        str(tmp_path),
        "--test_datasets",
        "superclevr_tiny",
        "geoqa_tiny",
        "--output_dir",
        str(tmp_path / "logs"),
    ]
    assert cli.main_r1v(argv) == 0
    assert recorder.image_processor is None  # no REC dataset: no checkpoint files read
    assert recorder.args.max_new_tokens == 1024  # the largest per-task budget of the run
    table = json.loads((tmp_path / "logs" / "summary_qwen2.5-vl-3b-instruct_r1_100.json").read_text())
    assert [(t["dataset"], t["task"], t["correct"], t["n"]) for t in table] == [
        ("superclevr_tiny", "counting", 2, 3),
        ("geoqa_tiny", "geoqa", 2, 3),
    ]


def test_malformed_dataset_fails_before_the_model_is_built(tmp_path, monkeypatch):
    (tmp_path / "bad_counting.jsonl").write_text('{"image_path": "a.png", "question": "q", "ground_truth": "lots"}\n')
    called = []
    monkeypatch.setattr(cli, "build_generate_fn", lambda *a, **k: called.append(1))
    argv = [
        "--model_path",
        "m",
        "--data_root",
        str(tmp_path),
        "--image_root",
        str(tmp_path),
        "--test_datasets",
        "bad_counting",
    ]
    with pytest.raises(DatasetError, match="bad_counting.jsonl:1"):
        cli.main_r1v(argv)
    assert called == []
    with pytest.raises(FileNotFoundError, match="nope"):
        cli.main_r1v([*argv[:-1], "nope_counting"])


@pytest.mark.parametrize(
    "name, task",
    [
        ("superclevr_test200_counting_problems", "counting"),
        ("geoqa_test_prompts", "geoqa"),
        ("clevr_cogen_a_eval", "counting"),
    ],
)
def test_infer_r1v_task(name, task):
    assert cli.infer_r1v_task(name) == task


def test_infer_r1v_task_refuses_to_guess():
    with pytest.raises(ValueError, match="--task"):
        cli.infer_r1v_task("mathvista_mini")


def test_resolve_model_family_and_pixels(tmp_path):
    ckpt = write_checkpoint(tmp_path / "ckpt", model_type="qwen2_vl", max_pixels=12845056)
    args = cli.rec_parser().parse_args(["--model_path", str(ckpt), "--data_root", "d", "--image_root", "i"])
    assert cli.resolve_model_family(args) == "qwen2_vl"
    assert cli.resolve_image_processor(args).max_pixels == 12845056
    args = cli.rec_parser().parse_args(
        [
            "--model_path",
            str(ckpt),
            "--data_root",
            "d",
            "--image_root",
            "i",
            "--model_family",
            "qwen2_5_vl",
            "--min_pixels",
            "200704",
            "--max_pixels",
            "401408",
        ]
    )
    assert cli.resolve_model_family(args) == "qwen2_5_vl"
    proc = cli.resolve_image_processor(args)
    assert (proc.min_pixels, proc.max_pixels) == (200704, 401408)
    assert proc.resized_size(4000, 3000)[0] * proc.resized_size(4000, 3000)[1] <= 401408

    (ckpt / "config.json").write_text(json.dumps({"model_type": "llava"}))
    args = cli.rec_parser().parse_args(["--model_path", str(ckpt), "--data_root", "d", "--image_root", "i"])
    with pytest.raises(ValueError, match="--model_family"):
        cli.resolve_model_family(args)
    args = cli.rec_parser().parse_args(
        ["--model_path", str(tmp_path / "none"), "--data_root", "d", "--image_root", "i"]
    )
    with pytest.raises(FileNotFoundError, match="--model_family"):
        cli.resolve_model_family(args)
