"""Property tests: no reward raises on any completion text; math scoring is bounded in time."""

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from paddlemix_r1.rewards import get_reward, list_rewards
from paddlemix_r1.rewards.math_answer import MathVerifier, make_math_reward

# Fragments that steer generated text into the parsers' interesting corners: tags, brackets,
# box tokens, JSON, numbers, LaTeX and unicode math.
# fmt: off
FRAGMENTS = [
    '<think>', '</think>', '<answer>', '</answer>', '<|box_start|>', '<|box_end|>', '[', ']', '(', ')', '{', '}',
    ',', ' ', '\n', '"bbox_2d": ', '```json', '```', '-', '+', '.', 'e', '1', '23', '4.5', '1e999', 'nan', 'inf',
    '$', '\\frac{', '\\sqrt{', '\\boxed{', '^', '_', '\\circ', '°', '√', 'π', 'cm', '米', 'three', 'twenty-', 'A',
    '(B)', 'answer is ', '=', '\\left(', '\\right)', '\\begin{pmatrix}', '\\\\', '&', 'x', '!', '%', '\\infty',
    '\\text{', '10^{10^{10}}',
]
# fmt: on
biased_text = st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=5), max_size=40).map("".join)
any_text = st.text(max_size=300) | biased_text

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
}
FAST_REWARDS = sorted(COLUMNS)


def test_every_registered_issue_reward_is_covered():
    assert set(FAST_REWARDS) | {"math"} <= set(list_rewards())


@pytest.mark.parametrize("name", FAST_REWARDS)
@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=any_text)
def test_fast_rewards_never_raise(name, text):
    columns = {k: [v] for k, v in COLUMNS[name].items()}
    scores = get_reward(name)([text], **columns)
    assert len(scores) == 1 and isinstance(scores[0], float) and 0.0 <= scores[0] <= 1.0


@pytest.fixture(scope="module")
def math_reward():
    with MathVerifier(timeout_s=2.0) as verifier:
        yield make_math_reward(verifier), verifier


@settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(text=any_text, gold=st.sampled_from(["140°", "2√{3}", "\\frac{4}{3}", "B", "12cm"]))
def test_math_never_raises_and_is_bounded_in_time(math_reward, text, gold):
    reward, verifier = math_reward
    start = time.perf_counter()
    scores = reward([text], solution=[gold])
    elapsed = time.perf_counter() - start
    assert scores in ([0.0], [1.0])
    # the deadline, plus a possible restart of a worker killed by the previous example
    assert elapsed < verifier.timeout_s + 2.0
