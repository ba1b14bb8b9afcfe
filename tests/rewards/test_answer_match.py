"""default / mcq / yes_no / all_match on literal strings, each VLM-R1 bug we do not copy named."""

import pytest

from paddlemix_r1.rewards import get_reward
from paddlemix_r1.rewards.answer_match import clean_text, extract_choice, extract_yes_no, fuzzy_ratio


def A(text):
    return f"<think>...</think><answer>{text}</answer>"


# ---- yes_no --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "answer, gold, score",
    [
        ("Yes", "yes", 1.0),
        ("Yes, the dog is on the left.", "<answer> Yes </answer>", 1.0),
        ("No.", "no", 1.0),
        ("no", "Yes", 0.0),
        ("I do not know", "no", 0.0),  # VLM-R1: "no" in "not" -> 1.0
        ("I don't know", "no", 0.0),  # VLM-R1: "no" in "know" -> 1.0
        ("There is nothing there", "no", 0.0),  # VLM-R1: "no" in "nothing" -> 1.0
        ("None of them", "no", 0.0),
        ("Not sure, but yes", "yes", 1.0),  # VLM-R1: "no" in "Not" comes first -> 0.0
        ("", "yes", 0.0),
    ],
)
def test_yes_no(answer, gold, score):
    assert get_reward("yes_no")([A(answer)], solution=[gold]) == [score]


def test_yes_no_gold_without_yes_or_no_raises():
    """VLM-R1 scores 1.0 when neither side has yes/no (both ''), e.g. an empty answer against "maybe"."""
    with pytest.raises(ValueError, match=r"yes_no: solution\[0\]"):
        get_reward("yes_no")([A("")], solution=["maybe"])


def test_yes_no_needs_the_answer_block():
    assert get_reward("yes_no")(["<think>yes</think>", "Yes"], solution=["yes", "yes"]) == [0.0, 0.0]


@pytest.mark.parametrize("text, word", [("Yes!", "yes"), ("nope", None), ("know", None), ("NO way", "no")])
def test_extract_yes_no(text, word):
    assert extract_yes_no(text) == word


# ---- mcq -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "answer, gold, score",
    [
        ("B", "B", 1.0),
        ("(B)", "B", 1.0),  # VLM-R1's letter regex needs punctuation after the letter: no choice, 0.0
        ("(B) 140°", "<answer> B </answer>", 1.0),
        ("B. 65°", "(B)", 1.0),
        ("The answer is C.", "C", 1.0),
        ("\\boxed{D}", "D", 1.0),
        ("答案是B", "B", 1.0),
        ("b", "B", 1.0),
        ("C", "B", 0.0),
        ("I am not sure", "B", 0.0),
        ("", "A", 0.0),
    ],
)
def test_mcq(answer, gold, score):
    assert get_reward("mcq")([A(answer)], solution=[gold]) == [score]


def test_mcq_reads_the_last_answer_block():
    """VLM-R1's mcq takes the FIRST <answer> block (its other methods take the last)."""
    completion = "<answer>A</answer> wait, no: <answer>C</answer>"
    assert get_reward("mcq")([completion], solution=["C"]) == [1.0]


def test_mcq_gold_without_letter_raises():
    """VLM-R1 compares against the raw gold string instead: every such row silently scores 0."""
    with pytest.raises(ValueError, match=r"mcq: solution\[0\]"):
        get_reward("mcq")([A("B")], solution=["a cat"])


def test_extract_choice_scores_each_letter_at_its_own_position():
    """VLM-R1 re-finds each candidate with text.find(letter): the B of "BECAUSE" sits at the start,
    so B lost its end-of-text bonus and A won. Scored at its own position, B wins."""
    text = "Because A. is wrong and the rest is fine, we pick B."
    assert extract_choice(text) == "B"


@pytest.mark.parametrize(
    "text, letter",
    [("B", "B"), ("[c]", "C"), ("B: yes", "B"), ("option (D)", "D"), ("A triangle has 180°", None), ("Paris", None)],
)
def test_extract_choice(text, letter):
    assert extract_choice(text) == letter


# ---- all_match -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "answer, gold, score",
    [
        ("Scratch", "scratch", 1.0),
        (" Scratch.\n", "<answer> scratch </answer>", 1.0),
        ("Scratch \n mark", "scratch mark", 0.0),  # newline after a space is deleted: "scratch  mark"
        ("Scratch\nmark", "scratch mark", 1.0),  # a bare newline becomes a space
        ("dent", "scratch", 0.0),
    ],
)
def test_all_match(answer, gold, score):
    assert get_reward("all_match")([A(answer)], solution=[gold]) == [score]


def test_clean_text_is_vlm_r1s():
    assert clean_text(" The Cat.. \n") == "the cat"
    assert clean_text("a\nb") == "a b"
    assert clean_text("a \nb") == "a b"


# ---- default -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "answer, gold, score",
    [
        ("2sqrt(3)", "2√{3}", 1.0),  # math_verify with the math reward's normalisation
        ("\\frac{1}{2}", "0.5", 1.0),
        ("15", "15 apples", 1.0),  # math_verify reads the gold's number
        ("16 apples", "15 apples", 0.0),  # VLM-R1: fuzzy ratio 0.89 for a wrong count
        ("2018", "2019", 0.0),
        ("B", "B", 1.0),  # choice letter
        ("(C) red", "C", 1.0),
        ("A", "C", 0.0),
        ("Paris", "paris", 1.0),  # fuzzy ratio of the cleaned texts: equal
        ("", "paris", 0.0),
    ],
)
def test_default(answer, gold, score):
    assert get_reward("default")([A(answer)], solution=[gold]) == [pytest.approx(score)]


def test_default_fuzzy_ratio_is_levenshtein_ratio():
    # Indel similarity: "pari" vs "paris" = 1 - 1 / 9
    assert get_reward("default")([A("Pari")], solution=["Paris"]) == [pytest.approx(8 / 9)]
    assert fuzzy_ratio("kitten", "sitting") == pytest.approx(1 - 5 / 13)


def test_default_needs_the_answer_block():
    assert get_reward("default")(["the answer is 15", "<think>15</think>"], solution=["15", "15"]) == [0.0, 0.0]


@pytest.mark.parametrize("name", ["default", "mcq", "yes_no", "all_match"])
def test_empty_gold_raises(name):
    with pytest.raises(ValueError, match=r"solution\[0\]"):
        get_reward(name)([A("x")], solution=["<answer> </answer>"])
