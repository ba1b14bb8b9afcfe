"""Tasks: the one prompt table (verbatim reference strings), row schemas, answer parsing, metrics, rewards."""

from __future__ import annotations

import pytest

from paddlemix_r1.eval.evaluator import METHODS
from paddlemix_r1.rewards import get_reward
from paddlemix_r1.rewards.math_answer import MathVerifier
from paddlemix_r1.tasks import (
    PROMPTS,
    ScoreContext,
    build_conversation,
    check_prompt_method,
    get_prompt,
    get_task,
    list_tasks,
    normalize_rows,
    reward_columns,
    row_conversation,
)

# The reference systems' strings, copied by hand from the scripts named (spaces included): a test that
# reads them back from tasks/prompts.py would only compare the table with itself.
CURR_OPEN = ("{Question} First output the thinking process in <think> </think> tags and then output the final "
             "answer in <answer> </answer> tags.")
REFERENCE = {
    # PaddleMIX r1_mllm eval/test_rec.py get_test_template("r1") = VLM-R1 get_question_template("rec")
    ("rec", "r1"): "{Question} First output the thinking process in <think> </think> tags and then output the final "
                   "answer in <answer> </answer> tags. Output the final answer in JSON format.",
    ("rec", "rec"): "{Question} First output the thinking process in <think> </think> tags and then output the final "
                    "answer in <answer> </answer> tags. Output the final answer in JSON format.",
    # PaddleMIX r1_mllm eval/test_rec.py get_test_template("baseline")
    ("rec", "baseline"): "Locate {Question}, output its bbox coordinates using JSON format.",
    # PaddleMIX r1_mllm train/grpo_r1-v.py and R1-V src/r1-v/src/open_r1/grpo.py: two spaces after {Question}
    ("counting", "train"): "{Question}  Output the thinking process in <think> </think> and final answer (number) in "
                           "<answer> </answer> tags.",
    ("geoqa", "train"): "{Question}  Output the thinking process in <think> </think> and final answer (number) in "
                        "<answer> </answer> tags.",
    # R1-V src/eval/test_qwen2vl_counting_superclevr.py = PaddleMIX eval/test_r1-v.py (both methods)
    ("counting", "r1"): "{Question} First output the thinking process in <think> </think> and final answer (number) in "
                        "<answer> </answer> tags.",
    ("counting", "baseline"): "{Question} First output the thinking process in <think> </think> and final answer "
                              "(number) in <answer> </answer> tags.",
    # R1-V src/eval/test_qwen2vl_geoqa.py
    ("geoqa", "r1"): "{Question} Output the thinking process in <think> </think> and final answer (number) in "
                     "<answer> </answer> tags.",
    ("geoqa", "baseline"): "{Question} Output the thinking process in <think> </think> and final answer (number) in "
                           "<answer> </answer> tags.",
    # VLM-R1 qwen_module.get_question_template (research file §1.6)
    ("general", "default"): "{Question} First output the thinking process in <think> </think> tags and then output "
                            "the final answer in <answer> </answer> tags.",
    ("general", "gui"): "{Question} First output the thinking process in <think> </think> tags and then output the "
                        "final answer in <answer> </answer> tags.",
    ("general", "rec"): "{Question} First output the thinking process in <think> </think> tags and then output the "
                        "final answer in <answer> </answer> tags. Output the final answer in JSON format.",
    ("general", "ic"): "{Question} First thinks about the reasoning process in the mind and then provides the user "
                       "with the answer. The reasoning process and answer are enclosed within <think> </think> and "
                       "<answer> </answer> tags, respectively, i.e., <think> reasoning process here </think>"
                       "<answer> json format answer here </answer>",
    ("general", "odLength"): "First thinks about the reasoning process in the mind and then provides the user with the "
                             "answer. The reasoning process and answer are enclosed within <think> </think> and "
                             "<answer> </answer> tags, respectively, i.e., <think> reasoning process here </think>"
                             "<answer> answer here </answer>\n{Question}",
    ("ovd", "r1"): "First thinks about the reasoning process in the mind and then provides the user with the "
                   "answer. The reasoning process and answer are enclosed within <think> </think> and "
                   "<answer> </answer> tags, respectively, i.e., <think> reasoning process here </think>"
                   "<answer> answer here </answer>\n{Question}",
    ("ovd", "baseline"): "{Question}",
    # Curr-ReFT (research file Part 1 §1.2): Stage1_judge / Stage2_choice / Stage3_open _math_resize.py and
    # eval/muti_process_eval.py
    **{(task, "judge"): CURR_OPEN + " Ensure your final answer is exactly 'yes' or 'no'."
       for task in ("detection", "classify", "math")},
    **{(task, "choice"): CURR_OPEN + " Ensure your final answer is exactly one of the provided option letters "
                                     "without any additional text." for task in ("detection", "math")},
    ("classify", "choice"): CURR_OPEN + " Based on the given options, select all options that accurately describe "
                            "what is shown in the image. Ensure your final answer is exactly one or more of the "
                            "provided option letters without any additional text.",
    ("detection", "open"): CURR_OPEN + " Output the final answer in JSON format in <answer> </answer> tags.",
    ("classify", "open"): CURR_OPEN,
    ("math", "open"): CURR_OPEN,
    **{("detection", m): "{Question} First output your thinking process in <think> </think> tags and then provide "
                         "the the final answer as bounding box coordinates in <answer> </answer> tags. Output the "
                         "final answer in JSON format." for m in ("r1", "baseline")},
    **{(task, m): CURR_OPEN for task in ("classify", "math") for m in ("r1", "baseline")},
}


def test_the_prompt_table_holds_the_reference_strings_verbatim():
    assert {key: t.template for key, t in PROMPTS.items()} == REFERENCE
    for template in PROMPTS.values():
        assert template.source and template.template.count("{Question}") == 1


def test_every_task_has_its_training_prompt_and_the_cli_methods():
    tasks = list_tasks()
    assert tasks == sorted(tasks)  # other modules may register more tasks
    assert {"classify", "counting", "detection", "general", "geoqa", "math", "ovd", "rec"} <= set(tasks)
    for name in list_tasks():
        task = get_task(name)
        assert task.train_method in task.methods
        for reward in task.rewards:
            get_reward(reward)  # every training reward is registered
    for name in ("rec", "counting", "geoqa", "ovd", "detection", "classify", "math"):
        assert set(METHODS) <= set(get_task(name).methods)
    assert get_task("general").methods == ("default", "rec", "ic", "odLength", "gui")
    with pytest.raises(ValueError, match=r"task 'counting' has no prompt method 'gui'; its methods: \['baseline', 'r1', 'train'\]"):
        get_prompt("counting", "gui")
    with pytest.raises(ValueError, match=f"unknown task 'ocr'; tasks: {', '.join(tasks)}$"):
        get_task("ocr")


def test_prompts_fill_their_question_field():
    row = {"problem": "the red car on the left", "normal_caption": "red car", "task": "rec", "images": ["a.png"]}
    rec = get_task("rec")
    assert rec.prompt(row).startswith("the red car on the left First output")  # training: r1
    assert rec.prompt(row, "baseline") == "Locate red car, output its bbox coordinates using JSON format."
    with pytest.raises(ValueError, match=r"data.json:7: this prompt needs the row's 'normal_caption'"):
        rec.prompt({**row, "normal_caption": None}, "baseline", where="data.json:7")
    counting = get_task("counting")
    assert counting.prompt({"problem": "How many?"}) == REFERENCE[("counting", "train")].format(Question="How many?")
    assert counting.prompt({"problem": "How many?"}, "r1").startswith("How many? First output")


def test_conversations_put_every_image_before_the_text():
    assert build_conversation("q", 2) == [{"role": "user", "content": [
        {"type": "image"}, {"type": "image"}, {"type": "text", "text": "q"}]}]
    row = {"task": "general", "problem": "Which screenshot shows the defect?", "images": ["a.png", "b.png"]}
    conv = row_conversation(row, "gui")
    assert [c["type"] for c in conv[0]["content"]] == ["image", "image", "text"]
    assert conv[0]["content"][-1]["text"] == REFERENCE[("general", "gui")].format(Question=row["problem"])
    custom = row_conversation(row, template="Q: {Question}")
    assert custom[0]["content"][-1]["text"] == "Q: Which screenshot shows the defect?"


@pytest.mark.parametrize("task, value, canonical", [
    ("rec", "[1, 2, 3.5, 4]", [1.0, 2.0, 3.5, 4.0]),
    ("rec", [1, 2, 3, 4], [1.0, 2.0, 3.0, 4.0]),
    ("counting", "<answer> 3 </answer>", 3),
    ("counting", 4.0, 4),
    ("geoqa", "<answer> 140° </answer>", "140°"),
    ("general", "<answer> B </answer>", "B"),
    ("general", "<think>because</think><answer>yes</answer>", "yes"),
    ("general", [10, 20, 30, 40], "[10, 20, 30, 40]"),  # JSON, not Python's repr
    ("general", {"label": "cat"}, '{"label": "cat"}'),
    ("general", 7, "7"),
])
def test_gold_answers_in_canonical_form(task, value, canonical):
    assert get_task(task).parse_solution(value) == canonical


@pytest.mark.parametrize("task, value, message", [
    ("rec", [1, 2, 3], "4 numbers"),
    ("rec", [1, 2, 3, float("inf")], "finite"),
    ("counting", "many", "integer"),
    ("counting", True, "integer"),
    ("geoqa", "<answer> </answer>", "empty"),
    ("general", "  ", "empty"),
    ("general", None, "text or a JSON value"),
])
def test_malformed_gold_answers_name_the_row(task, value, message):
    with pytest.raises((TypeError, ValueError), match=message) as info:
        get_task(task).parse_solution(value, where="f.jsonl:3: field 'solution'")
    assert str(info.value).startswith("f.jsonl:3")


@pytest.mark.parametrize("task, gold, message", [
    ("rec", [float("nan"), 1, 2, 3], "finite"),
    ("rec", [30, 1, 2, 3], "x2 > x1"),
    ("rec", [1, 30, 2, 3], "y2 > y1"),
    ("counting", -3, ">= 0"),
    ("detection", "[9, 9, 1, 1]", "x2 > x1"),
    ("ovd", [{"bbox_2d": [5, 5, 1, 9], "label": "cat"}], "x2 > x1"),
    ("geoqa", "", "empty"),
])
def test_check_gold_refuses_golds_the_task_cannot_score(task, gold, message):
    """The one gold check the readers (training) and evaluate() (evaluation) both call."""
    with pytest.raises(ValueError, match=message) as info:
        get_task(task).check_gold(gold, where="f.jsonl:3: field 'solution'")
    assert str(info.value).startswith("f.jsonl:3")


@pytest.mark.parametrize("task, gold", [
    ("rec", [1.0, 2.0, 3.0, 4.0]), ("counting", 0), ("geoqa", "140°"), ("general", "yes"),
    ("detection", "[1, 1, 9, 9]"), ("ovd", []), ("math", "\\frac{1}{2}"), ("classify", "cat"),
])
def test_check_gold_accepts_canonical_golds(task, gold):
    get_task(task).check_gold(get_task(task).parse_solution(gold))


def test_answers_are_read_from_the_answer_block_unless_lenient():
    rec, counting, geoqa = get_task("rec"), get_task("counting"), get_task("geoqa")
    assert rec.parse_answer("<think>[0, 0, 9, 9]</think><answer>[1, 2, 3, 4]</answer>") == (1.0, 2.0, 3.0, 4.0)
    assert rec.parse_answer("the box is [1, 2, 3, 4]") is None
    assert rec.parse_answer("the box is [1, 2, 3, 4]", lenient=True) == (1.0, 2.0, 3.0, 4.0)
    assert counting.parse_answer("<answer>three</answer>") == 3
    assert counting.parse_answer("there are 3") is None
    assert counting.parse_answer("1, 2, so 3", lenient=True) == 3
    assert geoqa.parse_answer("<think>..</think><answer> 140° </answer>") == "140°"
    assert get_task("general").parse_answer("no tags") is None


def test_metrics_of_each_task():
    rec = get_task("rec")
    ctx = ScoreContext(model_family="qwen2_5_vl", image_size=(2000, 1000), resized_size=(1400, 700))
    s = rec.score("<answer>[70, 70, 210, 140]</answer>", [100, 100, 300, 200], ctx)  # resized frame -> IoU 1
    assert s.correct and s.score == pytest.approx(1.0) and s.parsed["box_original"] == pytest.approx([100, 100, 300, 200])
    with pytest.raises(ValueError, match="model_family"):
        rec.check_evaluation(None)
    counting = get_task("counting")
    assert counting.score("<answer>5</answer>", 5, ScoreContext()).correct
    assert not counting.score("<answer>3 or 5</answer>", 5, ScoreContext()).correct  # hedging answers nothing
    with MathVerifier(timeout_s=3.0) as verifier:
        s = get_task("geoqa").score("<answer>2\\sqrt{3}</answer>", "2√{3}", ScoreContext(verifier=verifier))
    assert s.correct and s.status == "correct"
    general = get_task("general")
    assert general.score("<think>.</think><answer>(B)</answer>", "B", ScoreContext(accu_reward_method="mcq")).correct
    s = general.score("<answer>I do not know</answer>", "no", ScoreContext(accu_reward_method="yes_no"))
    assert not s.correct and s.score == 0.0 and s.parsed == "I do not know"
    with pytest.raises(ValueError, match="accu_reward_method"):
        general.score("<answer>B</answer>", "B", ScoreContext())


def test_task_reward_is_the_weighted_sum_of_its_training_rewards():
    completions = ["<think>count</think><answer>3</answer>", "<answer>3</answer>", "<think>x</think><answer>4</answer>"]
    assert get_task("counting").reward(completions, solution=[3, 3, 3]) == [2.0, 1.0, 1.0]


def test_rows_built_in_code_are_completed_like_file_rows():
    rows = [
        {"id": "a", "images": ["1.png"], "problem": "How many?", "solution": "<answer> 2 </answer>"},
        {"id": "b", "images": "2.png", "problem": "Where?", "solution": [1, 2, 3, 4], "task": "rec"},
        {"id": "c", "images": ["3.png"], "problem": "Q?", "solution": "B", "task": "general",
         "accu_reward_method": "mcq"},
    ]
    out = normalize_rows(rows, default_task="counting")
    assert [(r["task"], r["solution"], r["accu_reward_method"]) for r in out] == [
        ("counting", 2, "default"), ("rec", [1.0, 2.0, 3.0, 4.0], "default"), ("general", "B", "mcq")]
    assert out[1]["images"] == ["2.png"] and rows[1]["images"] == "2.png"  # new dicts, inputs untouched
    with pytest.raises(ValueError, match=r"row 0 \(id 'a'\): field 'task' must name a task"):
        normalize_rows([{**rows[0], "task": "ocr"}], default_task="counting")
    with pytest.raises(ValueError, match=r"row 0 \(id 'c'\): field 'accu_reward_method' must be one of"):
        normalize_rows([{**rows[2], "accu_reward_method": "odlength"}], default_task="counting")
    with pytest.raises(ValueError, match=r"row 0 \(id 'a'\): missing field 'problem'"):
        normalize_rows([{k: v for k, v in rows[0].items() if k != "problem"}], default_task="counting")
    check_prompt_method(out, None)
    with pytest.raises(ValueError, match="task_type 'gui' is not a prompt of every task"):
        check_prompt_method(out, "gui")
    check_prompt_method(out[2:], "gui")


def test_reward_columns_repeat_each_row_for_its_completions():
    rows = [{"id": "a", "images": ["1.png", "2.png"], "problem": "p", "solution": 3, "task": "counting",
             "accu_reward_method": "default"},
            {"id": "b", "images": ["3.png"], "problem": "q", "solution": "B", "task": "general",
             "accu_reward_method": "mcq", "extra": 1}]
    cols = reward_columns(rows, [[(40, 30), (20, 10)], [(64, 48)]], [[(56, 28), (28, 28)], [(56, 56)]],
                          "qwen2_5_vl", g=2)
    assert "images" not in cols
    assert cols["accu_reward_method"] == ["default", "default", "mcq", "mcq"]
    assert cols["task"] == ["counting", "counting", "general", "general"]
    assert cols["extra"] == [None, None, 1, 1]  # union of the rows' fields
    assert cols["image_size"] == [[40, 30], [40, 30], [64, 48], [64, 48]]  # the first image's frame
    assert cols["resized_size"] == [[56, 28], [56, 28], [56, 56], [56, 56]]
    assert cols["model_family"] == ["qwen2_5_vl"] * 4
