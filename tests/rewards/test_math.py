"""math reward: literal strings (GeoQA forms, LaTeX, choice letters) and the time bound."""

import os
import threading
import time

import pytest

from paddlemix_r1.rewards import get_reward
from paddlemix_r1.rewards.math_answer import (
    MathVerifier,
    gold_choice,
    make_math_reward,
    math_candidates,
    normalize_math_text,
    predicted_choice,
)


@pytest.fixture(scope="module")
def verifier():
    with MathVerifier(timeout_s=3.0) as v:
        yield v


@pytest.fixture(scope="module")
def math(verifier):
    return make_math_reward(verifier)


@pytest.mark.parametrize(
    "completion, gold",
    [
        ("<think>180 - 40</think><answer>140°</answer>", "140°"),
        ("<answer>140</answer>", "140°"),
        ("<answer>140°</answer>", "<answer> 140° </answer>"),
        ("<answer>$140^\\circ$</answer>", "140°"),
        ("<answer>\\boxed{140^{\\circ}}</answer>", "140°"),
        ("<answer>The angle CED is 140 degrees.</answer>", "140°"),
        ("<answer>∠CED = 140°</answer>", "140°"),
        ("<answer>2√3</answer>", "2√{3}"),
        ("<answer>2\\sqrt{3}</answer>", "2√{3}"),  # bare LaTeX: wrapped in $...$ before parsing
        ("<answer>$2\\sqrt{3}$</answer>", "2\\sqrt{3}"),
        ("<answer>\\frac{\\sqrt{3}}{2}</answer>", "\\frac{√{3}}{2}"),
        ("<answer>0.5</answer>", "\\frac{1}{2}cm²"),
        ("<answer>4\\pi cm</answer>", "4πcm"),
        ("<answer>2√{15} m</answer>", "2√{15}米"),
        ("<answer>6</answer>", "6.00米"),
        ("<answer>240π cm²</answer>", "240πcm^{2}"),
        ("<answer>B</answer>", "B"),
        ("<answer>(B) 140°</answer>", "(B)"),
        ("<answer>B. 65°</answer>", "B"),
        ("<answer>The answer is C</answer>", "C"),
        ("<answer>\\boxed{D}</answer>", "D"),
        # D1 (R1-V's GeoQA logs): plain-text sqrt and pi scored 0 against these golds
        ("<answer>2sqrt(3)</answer>", "2√{3}"),
        ("<answer>4 * pi</answer>", "4πcm"),
        ("<answer>9pi</answer>", "9πcm^{2}"),
        ("<answer>2*sqrt(3)</answer>", "2√{3}"),
        ("<answer>2 sqrt 3</answer>", "2√{3}"),
        ("<answer>sqrt(3)/2</answer>", "\\frac{√{3}}{2}"),
        ("<answer>4pi cm</answer>", "4πcm"),
        ("<answer>2\\sqrt(3)</answer>", "2√{3}"),
    ],
)
def test_math_correct(math, completion, gold):
    assert math([completion], solution=[gold]) == [1.0]


@pytest.mark.parametrize(
    "completion, gold",
    [
        ("<answer>130°</answer>", "140°"),
        ("<answer>2</answer>", "2√{3}"),  # bare "2\sqrt{3}"-style parsing to 2 must not match 2
        ("<answer>2\\sqrt{3}</answer>", "2"),
        ("<answer>C</answer>", "B"),
        ("<answer>140°</answer>", "B"),  # choice gold needs a letter
        ("<answer>A triangle has 180°</answer>", "A"),  # an article is not a choice
        ("<answer></answer>", "140°"),
        ("<answer>no idea</answer>", "140°"),
        ("", "140°"),
        ("<answer>140</answer><answer>150</answer>", "140°"),  # the last block counts
        ("no tags, the result is 12", "12"),  # training requires the answer block
        ("<think>140°</think><answer>140°", "140°"),  # unclosed
        ("<answer>3pi</answer>", "9πcm^{2}"),
        ("<answer>2sqrt(2)</answer>", "2√{3}"),
    ],
)
def test_math_wrong(math, completion, gold):
    assert math([completion], solution=[gold]) == [0.0]


def test_anchor_digit_extractor_case(math):
    """PaddleMIX's test_r1-v read r'<answer>\\s*(\\d+)\\s*</answer>' and compared with "140°":
    never equal, so GeoQA accuracy was always 0. Here the same output scores 1."""
    assert math(["<think>..</think><answer>140°</answer>", "<answer>140</answer>"], solution=["140°", "140°"]) == [
        1.0,
        1.0,
    ]


def test_lenient_scoring_keeps_the_fallback_for_baseline_evaluation(verifier):
    from paddlemix_r1.rewards.math_answer import score_math_completion

    assert not score_math_completion("the result is 12", "12", verifier).correct
    assert score_math_completion("the result is 12", "12", verifier, lenient=True).correct


def test_registered_math_reward():
    assert get_reward("math")(["<answer>55°</answer>", "<answer>56</answer>"], solution=["55°", "55°"]) == [1.0, 0.0]


@pytest.mark.parametrize(
    "text, normalized",
    [
        ("140°", "140"),
        ("140^\\circ", "140"),
        ("140^{\\circ}", "140"),
        ("2√{15}米", "2\\sqrt{15}"),
        ("√3", "\\sqrt{3}"),
        ("4πcm", "4\\pi"),
        ("27cm^{2}", "27"),
        ("5cm^2^", "5"),
        ("16π平方米", "16\\pi"),
        ("(√{3}+1)小时", "(\\sqrt{3}+1)"),
        ("12\\text{cm}", "12"),
        ("\\sum", "\\sum"),  # the "m" of a command is not metres
        ("m", "m"),  # nothing left to strip to
        ("2sqrt(3)", "2\\sqrt{3}"),  # D1: plain-text spellings
        ("sqrt3", "\\sqrt{3}"),
        ("sqrt{3}", "\\sqrt{3}"),
        ("√(3)", "\\sqrt{3}"),
        ("4 * pi", "4 * \\pi"),
        ("9pi", "9\\pi"),
        ("pixel api spine", "pixel api spine"),  # "pi" inside words is left alone
        ("\\sqrt{3}\\pi", "\\sqrt{3}\\pi"),
    ],
)
def test_normalize_math_text(text, normalized):
    assert normalize_math_text(text) == normalized
    assert normalize_math_text(normalized) == normalized  # idempotent


def test_math_candidates_wrap_bare_latex_and_focus_prose():
    assert math_candidates("2\\sqrt{3}") == ["$2\\sqrt{3}$", "2\\sqrt{3}"]
    assert math_candidates("$\\frac{1}{2}$") == ["$\\frac{1}{2}$"]
    assert math_candidates("The answer is \\frac{1}{2}")[0] == "$\\frac{1}{2}$"
    assert math_candidates("140") == ["140"]


@pytest.mark.parametrize("gold, letter", [("B", "B"), ("(C)", "C"), ("D.", "D"), ("140°", None), ("AB", None)])
def test_gold_choice(gold, letter):
    assert gold_choice(gold) == letter


@pytest.mark.parametrize(
    "answer, letter",
    [("B", "B"), ("(B) 140°", "B"), ("C: 65", "C"), ("answer is (D)", "D"), ("\\boxed{E}", "E"), ("A triangle", None)],
)
def test_predicted_choice(answer, letter):
    assert predicted_choice(answer) == letter


def test_unparsable_gold_fails_loudly(math):
    with pytest.raises(ValueError, match=r"solution\[0\]"):
        math(["<answer>1</answer>"], solution=["!!!"])
    with pytest.raises(TypeError, match=r"solution\[0\]"):
        math(["<answer>1</answer>"], solution=[None])


# ---- time bound ---------------------------------------------------------------------------------

# math_verify spends > 20 s comparing this with 5 when nothing interrupts it (measured).
SLOW = "<answer>$2^{2^{2^{2^{2^{2}}}}}$</answer>"


def test_slow_answer_is_stopped_by_the_inner_alarm(verifier):
    reward = make_math_reward(verifier)
    start = time.perf_counter()
    assert reward([SLOW], solution=["5"]) == [0.0]
    assert time.perf_counter() - start < verifier.timeout_s + 1.0
    assert reward(["<answer>5</answer>"], solution=["5"]) == [1.0]  # still serving


@pytest.mark.slow
def test_hard_deadline_kills_and_restarts_the_worker():
    # Inner alarm off: only the parent's deadline can stop the comparison.
    with MathVerifier(timeout_s=1.0, op_timeout_s=None) as v:
        reward = make_math_reward(v)
        assert reward(["<answer>1</answer>"], solution=["1"]) == [1.0]  # worker started
        start = time.perf_counter()
        assert reward([SLOW], solution=["5"]) == [0.0]
        elapsed = time.perf_counter() - start
        assert 0.9 < elapsed < 2.0
        assert v.restarts == 1
        assert reward(["<answer>5</answer>"], solution=["5"]) == [1.0]  # a fresh worker answers


def test_works_outside_the_main_thread(math):
    """math_verify's own signal-based timeout raises ValueError outside the main thread."""
    results = {}

    def run():
        results["scores"] = math(["<answer>140°</answer>", SLOW], solution=["140°", "5"])

    t = threading.Thread(target=run)
    t.start()
    t.join(timeout=30)
    assert results["scores"] == [1.0, 0.0]


def test_forked_child_gets_its_own_worker(verifier):
    reward = make_math_reward(verifier)
    assert reward(["<answer>1</answer>"], solution=["1"]) == [1.0]  # parent's worker is running
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: score through the inherited verifier, report, exit whatever happens
        ok = False
        try:
            ok = reward(["<answer>2</answer>", "<answer>3</answer>"], solution=["2", "4"]) == [1.0, 0.0]
        finally:
            os.write(write_end, b"1" if ok else b"0")
            os._exit(0)
    os.close(write_end)
    assert os.read(read_end, 1) == b"1"
    os.waitpid(pid, 0)
    os.close(read_end)
    assert reward(["<answer>5</answer>"], solution=["5"]) == [1.0]  # the parent's pipes still work


# ---- a failed reading scores 0 ------------------------------------------------------------------

# Each of these parses to something other than 1/2 in its preferred (delimited) form, or not at all;
# the bare text math_verify falls back to holds the fragment "\frac{1}{2}", which must not be credited.
GARBAGE = {"sum-of-halves": "\\frac{1}{2}+" * 1000 + "1", "4302-nines": "9" * 4302 + "\\frac{1}{2}"}


@pytest.mark.parametrize("answer", GARBAGE.values(), ids=GARBAGE.keys())
def test_garbage_around_the_gold_scores_zero(math, verifier, answer):
    from paddlemix_r1.rewards.math_answer import score_math_completion

    assert math([f"<answer>{answer}</answer>"], solution=["\\frac{1}{2}"]) == [0.0]
    score = score_math_completion(f"<answer>{answer}</answer>", "\\frac{1}{2}", verifier)
    assert not score.correct and score.status in ("wrong", "error", "timeout")  # which one depends on load


@pytest.mark.parametrize("failure", ["timeout", "error"])
def test_a_preferred_candidate_that_fails_is_not_replaced_by_the_next(failure):
    """What happens when the delimited reading times out (machine load) or raises: the verdict is
    "timeout" / "error" whatever the bare text would have matched, so the score is 0 on any machine."""
    from paddlemix_r1.rewards import _math_worker

    worker = _math_worker.Worker(op_timeout=1)
    real_parse = worker._parse

    def parse(text, **kwargs):
        if text.startswith("$") and "+" in text:  # only the prediction's preferred candidate fails
            if failure == "timeout":
                raise worker._timeout_exc("parse timed out")
            raise RecursionError("maximum recursion depth exceeded")
        return real_parse(text, **kwargs)

    worker._parse = parse
    answer = "\\frac{1}{2}+\\frac{1}{3}"
    assert len(math_candidates(answer)) == 2  # a delimited and a bare reading
    verdict = worker.handle({"gold": math_candidates("\\frac{1}{2}"), "pred": math_candidates(answer)})
    assert verdict["status"] == failure


def test_a_gold_whose_reading_fails_is_a_data_error(verifier):
    from paddlemix_r1.rewards.math_answer import GoldUnparsedError, score_math_completion

    with pytest.raises(GoldUnparsedError, match=r"row 7: math_verify cannot parse the gold"):
        score_math_completion("<answer>1</answer>", "9" * 4302 + "\\frac{1}{2}", verifier, "row 7")
