"""Property tests: no reward raises on any completion text; math scoring is bounded in time."""

import json
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import paddlemix_r1.focus  # noqa: F401  (registers the focus_* rewards)
from paddlemix_r1.rewards import get_reward, list_rewards
from paddlemix_r1.rewards.accuracy import ACCURACY_METHODS, accuracy_methods, make_accuracy_reward
from paddlemix_r1.rewards.answer_match import make_default_reward
from paddlemix_r1.rewards.curr_reft import make_open_reward
from paddlemix_r1.rewards.llm_judge import JudgeConfig, LLMJudge, make_llm_reward
from paddlemix_r1.rewards.math_answer import MathVerifier, make_math_reward
from paddlemix_r1.rewards.parsing import extract_answer
from paddlemix_r1.rewards.reasoner import Reasoner, ReasonerConfig, make_reasoner_reward
from paddlemix_r1.rewards.shaping import make_length_reward

# Fragments that steer generated text into the parsers' interesting corners: tags, brackets,
# box tokens, JSON, numbers, LaTeX and unicode math.
# fmt: off
FRAGMENTS = [
    '<think>', '</think>', '<answer>', '</answer>', '<|box_start|>', '<|box_end|>', '[', ']', '(', ')', '{', '}',
    ',', ' ', '\n', '"bbox_2d": ', '```json', '```', '-', '+', '.', 'e', '1', '23', '4.5', '1e999', 'nan', 'inf',
    '$', '\\frac{', '\\sqrt{', '\\boxed{', '^', '_', '\\circ', '°', '√', 'π', 'cm', '米', 'three', 'twenty-', 'A',
    '(B)', 'answer is ', '=', '\\left(', '\\right)', '\\begin{pmatrix}', '\\\\', '&', 'x', '!', '%', '\\infty',
    '\\text{', '10^{10^{10}}', '"label": "cat"', '"label": ', '[{', '}]', '0, 0, 10, 10', 'None', 'yes', 'no',
    'not', 'know', 'B.', 'sqrt(', 'pi', 'Infinity', 'NaN',
]
# fmt: on
biased_text = st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=5), max_size=40).map("".join)
# Box lists that parse: odd numbers (negative, huge, NaN, inf), odd labels, odd items, in answer tags.
_number = st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(10**30), 10**30)
_item = (
    st.fixed_dictionaries(
        {
            "bbox_2d": st.lists(_number, min_size=3, max_size=5),
            "label": st.sampled_from(["cat", "dog", "Cat", ""]) | st.text(max_size=4),
        }
    )
    | st.integers()
    | st.text(max_size=4)
)
box_list_text = st.tuples(st.text(max_size=10), st.lists(_item, max_size=6), st.booleans()).map(
    lambda t: (
        f"{t[0]}<answer>" + ("```json\n" if t[2] else "") + json.dumps(t[1]) + ("\n```" if t[2] else "") + "</answer>"
    )
)
any_text = st.text(max_size=300) | biased_text | box_list_text

OVD_GOLD = (
    "```json\n"
    + json.dumps([{"bbox_2d": [10, 10, 50, 60], "label": "cat"}, {"bbox_2d": [0, 0, 5, 5], "label": "dog"}])
    + "\n```"
)

COLUMNS = {
    "format": {},
    "rec_format": {},
    "rec_iou": {
        "solution": [10, 10, 50, 60],
        "image_size": (640, 480),
        "resized_size": (644, 476),
        "model_family": "qwen2_5_vl",
    },
    "rec_acc": {"solution": [10, 10, 50, 60], "image_size": (640, 480), "model_family": "qwen2_vl"},
    "counting": {"solution": 3},
    "mcq": {"solution": "<answer> B </answer>"},
    "yes_no": {"solution": "no"},
    "all_match": {"solution": "Scratch"},
    "od_ap": {"solution": OVD_GOLD},
    "od_ap50": {"solution": None},
    "odLength": {
        "solution": OVD_GOLD,
        "model_family": "qwen2_5_vl",
        "image_size": (640, 480),
        "resized_size": (644, 476),
    },
    "weighted_sum": {"solution": OVD_GOLD, "model_family": "qwen2_vl", "image_size": (640, 480)},
    "repetition": {},
    "judge": {"solution": "<answer>yes</answer>"},
    "choice": {"solution": "<answer>A, C</answer>"},
    "curr_format": {"task": "detection", "solution": "<thinking>t</thinking><answer>[1, 2, 30, 40]</answer>"},
    # paddlemix_r1.focus registers these when imported (imported above, so the registry is the same whatever
    # ran first): turn-2 answers with each trajectory's box status, the box and the evidence region.
    "focus_answer": {"solution": "vertical", "focus_status": "ok"},
    "focus_box_valid": {"focus_status": "unparsable"},
    "focus_crop": {"focus_status": "ok", "focus_box": (0.1, 0.2, 0.6, 0.7), "evidence": (0.0, 0.0, 0.5, 0.5)},
}
FAST_REWARDS = sorted(COLUMNS)
RANGE = {"repetition": (-1.0, 0.0), "length": (-0.5, 1.0)}
# Covered below with their own fixtures: math_verify's worker, the stub judge.
SLOW_REWARDS = {"math", "default", "llm", "accuracy", "length", "open", "reasoner"}


def test_every_registered_reward_is_covered():
    """Every reward the package registers (tests register their own, e.g. tests/grpo: left out here)."""
    builtin = {n for n in list_rewards() if get_reward(n).__module__.startswith("paddlemix_r1.")}
    assert set(FAST_REWARDS) | SLOW_REWARDS == builtin


def fixture_settings(max_examples: int):
    """Hypothesis settings of the tests that share a module fixture (the math worker, the judge stub):
    no deadline or example database, the fixture health check off (the fixture is meant to be shared)."""
    return settings(max_examples=max_examples, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def _check(name, scores):
    low, high = RANGE.get(name, (0.0, 1.0))
    assert len(scores) == 1 and isinstance(scores[0], float) and low <= scores[0] <= high, scores


@pytest.mark.slow
@pytest.mark.parametrize("name", FAST_REWARDS)
@settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=any_text)
def test_fast_rewards_never_raise(name, text):
    columns = {k: [v] for k, v in COLUMNS[name].items()}
    _check(name, get_reward(name)([text], **columns))


@pytest.fixture(scope="module")
def math_reward():
    with MathVerifier(timeout_s=2.0) as verifier:
        yield make_math_reward(verifier), verifier


@pytest.mark.slow
@fixture_settings(150)
@given(text=any_text, gold=st.sampled_from(["140°", "2√{3}", "\\frac{4}{3}", "B", "12cm"]))
def test_math_never_raises_and_is_bounded_in_time(math_reward, text, gold):
    reward, verifier = math_reward
    start = time.perf_counter()
    scores = reward([text], solution=[gold])
    elapsed = time.perf_counter() - start
    assert scores in ([0.0], [1.0])
    # the deadline, plus a possible restart of a worker killed by the previous example
    assert elapsed < verifier.timeout_s + 2.0


# ---- rewards that call math_verify's worker or the judge -------------------------------------------------

nonempty_gold = st.text(min_size=1, max_size=30).filter(lambda g: extract_answer(g) != "")


@pytest.fixture(scope="module")
def slow_rewards(math_reward, judge_stub):
    _, verifier = math_reward
    judge = LLMJudge(JudgeConfig(base_url=judge_stub[0], timeout_s=0.5))
    accuracy = make_accuracy_reward(accuracy_methods(verifier, judge))
    return {
        "default": make_default_reward(verifier),
        "llm": make_llm_reward(judge),
        "accuracy": accuracy,
        "length": make_length_reward(accuracy),
    }


GOLD_OF = {
    "default": "12", "mcq": "C", "yes_no": "yes", "math": "2√{3}", "all_match": "dent", "od_ap": OVD_GOLD,
    "od_ap50": OVD_GOLD, "odLength": None, "weighted_sum": "None", "llm": "Paris",
}  # fmt: skip


@pytest.mark.slow
@fixture_settings(80)
@given(text=any_text, gold=nonempty_gold, name=st.sampled_from(["default", "llm"]))
def test_text_judged_rewards_never_raise_on_any_answer_or_gold(slow_rewards, text, gold, name):
    _check(name, slow_rewards[name]([text], solution=[gold]))


@pytest.mark.slow
@fixture_settings(80)
@given(text=any_text, method=st.sampled_from(ACCURACY_METHODS), n_tokens=st.integers(0, 5000))
def test_accuracy_and_length_never_raise(slow_rewards, text, method, n_tokens):
    columns = {"solution": [GOLD_OF[method]], "accu_reward_method": [method]}
    _check("accuracy", slow_rewards["accuracy"]([text], **columns))
    _check("length", slow_rewards["length"]([text], completion_length=[n_tokens], **columns))


# Curr-ReFT's ``open`` reward on each of its tasks (math rows call math_verify's worker).
OPEN_COLUMNS = [
    {"task": "detection", "solution": "<answer>[10, 10, 50, 60]</answer>", "model_family": "qwen2_5_vl",
     "image_size": (640, 480), "resized_size": (644, 476)},
    {"task": "detection", "solution": "<answer>[10, 10, 50, 60]</answer>", "model_family": "qwen2_vl",
     "image_size": (640, 480)},
    {"task": "classify", "solution": "<answer>cat, traffic light</answer>"},
    {"task": "math", "solution": "<thinking>t</thinking><answer>12</answer>"},
    {"task": "math", "solution": "<answer>B</answer>"},
    {"task": "math", "solution": "<answer>blue</answer>"},
]


@pytest.mark.slow
@fixture_settings(150)
@given(text=any_text, columns=st.sampled_from(OPEN_COLUMNS))
def test_curr_reft_open_never_raises(math_reward, text, columns):
    _, verifier = math_reward
    _check("open", make_open_reward(verifier)([text], **{k: [v] for k, v in columns.items()}))


class _EchoReasoner(Reasoner):
    """A reasoner whose every reply is the text it was given (the whole user turn, caption included), so
    arbitrary completions reach the boxed-answer grading as arbitrary replies."""

    def _answer(self, chats):
        return [[chat[-1]["content"]] * self.config.num_samples for chat in chats]


@pytest.mark.slow
@fixture_settings(80)
@given(text=any_text, boxed=st.booleans(), gold=st.sampled_from(["12", "\\boxed{\\frac{1}{2}}", "Yes", "2√{3}"]))
def test_reasoner_never_raises_on_any_caption(math_reward, text, boxed, gold):
    _, verifier = math_reward
    reward = make_reasoner_reward(_EchoReasoner(ReasonerConfig(url="http://127.0.0.1:9", num_samples=2)), verifier)
    caption = f"{text} \\boxed{{{text}}}" if boxed else text
    _check("reasoner", reward([caption], problem=["How many?"], solution=[gold]))
