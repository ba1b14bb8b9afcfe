"""VLM-R1 data end to end: three JSONL files with one accuracy method each (VLM-R1's --data_file_paths,
--image_folders, --reward_method), a row overriding its file's method, multi-image rows, conversations rows;
a tiny model trains on them on CPU and logs the accuracy reward per method. Plus the config checks and the
VLM-R1 recipes."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from paddlemix_r1.grpo.config import GRPOConfig
from paddlemix_r1.grpo.trainer import GRPOTrainer
from paddlemix_r1.rewards import get_reward

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
METHODS = ("mcq", "yes_no", "default")  # one per file, in file order


def _turns(question: str, answer: str, n_images: int) -> list[dict]:
    return [{"from": "human", "value": "<image>" * n_images + question}, {"from": "gpt", "value": answer}]


# (file method, rows): each row is (image name(s), question, gold answer, extra fields)
FILES = {
    "mcq": [("red.png", "Which colour is the square? A. blue B. red", "<answer> B </answer>", {}),
            ("blue.png", "Which colour is the square? A. blue B. red", "<answer> A </answer>", {})],
    "yes_no": [(["red.png", "blue.png"], "Are both squares red?", "no", {}),
               ("red.png", "Is the square red?", "<answer>yes</answer>", {})],
    "default": [("blue.png", "What colour is the square?", "blue", {}),
                # the row names its own method, overriding its file's (VLM-R1's accu_reward_method key)
                (["blue.png", "red.png"], "Name the colours, left image first.", "blue, red",
                 {"accu_reward_method": "all_match"})],
}


@pytest.fixture(scope="module")
def tiny(tiny_ckpt):
    return tiny_ckpt  # tests/conftest.py: one tiny Qwen2.5-VL (seed 1) per session


@pytest.fixture
def vlm_r1_files(tmp_path):
    """Three JSONL files, each with its own image folder of tiny PNGs; returns (files, folders)."""
    files, folders = [], []
    for method, rows in FILES.items():
        folder = tmp_path / f"images_{method}"
        folder.mkdir()
        Image.new("RGB", (56, 56), (220, 30, 30)).save(folder / "red.png")
        Image.new("RGB", (56, 28), (30, 30, 220)).save(folder / "blue.png")
        path = tmp_path / f"{method}.jsonl"
        with open(path, "w", encoding="utf-8") as f:
            for i, (image, question, answer, extra) in enumerate(rows):
                n = len(image) if isinstance(image, list) else 1
                f.write(json.dumps({"id": i, "image": image, "conversations": _turns(question, answer, n),
                                    **extra}) + "\n")
        files.append(str(path))
        folders.append(str(folder))
    return files, folders


def _cfg(tiny, files, folders, out, **kw):
    base = dict(model_name_or_path=tiny, output_dir=str(out), dataset="files", data_file_paths=":".join(files),
                image_folders=":".join(folders), reward_method=":".join(METHODS), task="general",
                reward_funcs=["accuracy", "format"], prompts_per_step=6, num_generations=2,
                max_completion_length=6, learning_rate=1e-3, beta=0.04, max_steps=2, visualdl=False,
                progress_bar=False, log_completions_steps=1, seed=3)
    base.update(kw)
    return GRPOConfig(**base)


def _by_method(records, method_of):
    """Mean accuracy reward of logged completions per row method, recomputed from the completion texts."""
    scores: dict[str, list[float]] = {}
    for r in records:
        m = method_of[r["id"]]
        score = get_reward("accuracy")([r["completion"]], solution=[r["solution"]], accu_reward_method=[m])[0]
        scores.setdefault(m, []).append(score)
    return {m: float(np.mean(v)) for m, v in scores.items()}


def test_three_vlm_r1_files_train_and_log_accuracy_per_method(tiny, vlm_r1_files, tmp_path):
    files, folders = vlm_r1_files
    trainer = GRPOTrainer(_cfg(tiny, files, folders, tmp_path / "run"))
    rows = trainer.dataset
    method_of = {r["id"]: r["accu_reward_method"] for r in rows}
    assert method_of == {"mcq/0": "mcq", "mcq/1": "mcq", "yes_no/0": "yes_no", "yes_no/1": "yes_no",
                         "default/0": "default", "default/1": "all_match"}
    assert {r["task"] for r in rows} == {"general"}
    assert [r["solution"] for r in rows] == ["B", "A", "no", "yes", "blue", "blue, red"]
    two = next(r for r in rows if r["id"] == "yes_no/0")
    assert two["images"] == [os.path.join(folders[1], "red.png"), os.path.join(folders[1], "blue.png")]
    content = trainer._conversation(two)[0]["content"]
    assert [c["type"] for c in content] == ["image", "image", "text"]
    assert content[-1]["text"] == ("Are both squares red? First output the thinking process in <think> </think> tags "
                                   "and then output the final answer in <answer> </answer> tags.")

    history = trainer.train()
    assert len(history) == 2
    records = [json.loads(line) for line in open(tmp_path / "run" / "completions.jsonl", encoding="utf-8")]
    for step, h in enumerate(history, start=1):
        logged = {k.split("/")[2]: v for k, v in h.items() if k.startswith("rewards/accuracy/") and k.count("/") == 3}
        assert set(logged) == {"mcq", "yes_no", "default", "all_match"}  # every row is in every step (6 prompts)
        expected = _by_method([r for r in records if r["step"] == step], method_of)
        assert logged == pytest.approx(expected)
        assert h["rewards/accuracy/mean"] == pytest.approx(np.mean(
            [v for m, v in expected.items() for _ in range(4 if m in ("mcq", "yes_no") else 2)]))
        assert np.isfinite(h["loss"])


CANNED = ["<think>look</think><answer>B</answer>", "<think>look</think><answer>blue</answer>"]


def test_per_method_means_on_known_completions(tiny, vlm_r1_files, tmp_path):
    """Every prompt's two completions decode to CANNED: each method's mean is then known from the golds."""
    files, folders = vlm_r1_files
    trainer = GRPOTrainer(_cfg(tiny, files, folders, tmp_path / "run", max_steps=1, log_completions_steps=0))
    trainer.processor.batch_decode = lambda ids, **_: [CANNED[i % 2] for i in range(len(ids))]  # group-major, G=2
    h = trainer.train()[0]
    expected: dict[str, list[float]] = {}
    for r in trainer.dataset:
        m = r["accu_reward_method"]
        expected.setdefault(m, []).extend(
            get_reward("accuracy")(CANNED, solution=[r["solution"]] * 2, accu_reward_method=[m] * 2))
    means = {m: float(np.mean(v)) for m, v in expected.items()}
    # the golds decide: mcq B/A -> 1 of 4; yes_no no/yes -> 0; default "blue" -> 1 and the fuzzy ratio of
    # "b" (0.4); all_match "blue, red" -> 0
    assert means == pytest.approx({"mcq": 0.25, "yes_no": 0.0, "default": 0.7, "all_match": 0.0})
    for m, v in means.items():
        assert h[f"rewards/accuracy/{m}/mean"] == pytest.approx(v)
    assert h["rewards/format/mean"] == 1.0


def test_data_config_errors_name_the_fields():
    files = dict(dataset="files", task="general")
    with pytest.raises(ValueError, match="data_file_paths has 3 files but image_folders has 2 folders"):
        GRPOConfig(data_file_paths="a.jsonl:b.jsonl:c.jsonl", image_folders="A:B", **files)
    with pytest.raises(ValueError, match="data_file_paths and image_folders go together"):
        GRPOConfig(data_file_paths="a.jsonl", **files)
    with pytest.raises(ValueError, match="reward_method has 2 methods but there are 3 data files"):
        GRPOConfig(data_file_paths="a:b:c", image_folders="A:B:C", reward_method="mcq:default", **files)
    with pytest.raises(ValueError, match=r"unknown accuracy method\(s\) \['odlength'\]"):
        GRPOConfig(data_file_paths="a", image_folders="A", reward_method="odlength", **files)
    with pytest.raises(ValueError, match="reward_method is per data file: it needs dataset=files"):
        GRPOConfig(reward_method="mcq")
    with pytest.raises(ValueError, match="not both"):
        GRPOConfig(data_file_paths="a", image_folders="A", data_files=["b"], **files)
    with pytest.raises(ValueError, match="task_type 'gui': task 'counting' has no prompt method 'gui'"):
        GRPOConfig(task_type="gui")
    with pytest.raises(ValueError, match="task_type .* or prompt_template, not both"):
        GRPOConfig(task_type="r1", prompt_template="{Question}")
    cfg = GRPOConfig(data_files=["a.json:b.json"], image_root="coco", reward_method="default:mcq", **files)
    assert cfg.data_files_and_roots() == (["a.json", "b.json"], ["coco", "coco"])


def test_task_type_must_be_a_prompt_of_every_task_in_the_data(tiny, vlm_r1_files, tmp_path):
    files, folders = vlm_r1_files
    with open(files[0], "a", encoding="utf-8") as f:  # a counting row in the mcq file
        f.write(json.dumps({"image": "red.png", "conversations": _turns("How many squares?", "1", 1),
                            "task": "counting"}) + "\n")
    with pytest.raises(ValueError, match="task_type 'gui' is not a prompt of every task in the dataset"):
        GRPOTrainer(_cfg(tiny, files, folders, tmp_path / "run", task_type="gui"))


def test_vlm_r1_recipes_parse():
    rec = GRPOConfig.load(os.path.join(REPO, "configs", "vlm_r1_rec_qwen2_5_vl_3b.yaml"))
    files, roots = rec.data_files_and_roots()
    assert len(files) == len(roots) == 3 and rec.task == "rec" and rec.task_type == "rec"
    assert rec.reward_funcs == ["rec_iou", "rec_format"] and rec.max_completion_length == 2048
    lora = GRPOConfig.load(os.path.join(REPO, "configs", "vlm_r1_rec_lora_qwen2_5_vl_3b.yaml"))
    assert (lora.use_peft, lora.lora_r, lora.lora_alpha, lora.lora_dropout) == (True, 64, 128.0, 0.05)
    assert lora.freeze_vision and lora.learning_rate == 1e-5
    assert lora.data_files_and_roots() == (files, roots)
    gui = GRPOConfig.load(os.path.join(REPO, "configs", "vlm_r1_gui_qwen2_5_vl_3b.yaml"))
    assert (gui.task, gui.task_type, gui.reward_method) == ("general", "gui", "all_match")
    assert gui.reward_funcs == ["accuracy", "format"] and len(gui.data_files_and_roots()[0]) == 1


def test_length_and_repetition_rewards_train_with_the_token_counts(tiny, vlm_r1_files, tmp_path):
    """``length`` needs each completion's token count: the trainer passes ``completion_length``."""
    files, folders = vlm_r1_files
    cfg = _cfg(tiny, files, folders, tmp_path / "run", max_steps=1, log_completions_steps=0,
               reward_funcs=["accuracy", "length", "repetition"])
    h = GRPOTrainer(cfg).train()[0]
    for name in ("length", "repetition"):
        assert np.isfinite(h[f"rewards/{name}/mean"]), name
    assert -0.5 <= h["rewards/length/mean"] <= 1.0 and -1.0 <= h["rewards/repetition/mean"] <= 0.0
