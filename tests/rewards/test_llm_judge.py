"""llm reward against a stub judge on 127.0.0.1: verdicts, the request it sends, counted failures."""

import socket

import pytest

from paddlemix_r1.rewards import get_reward
from paddlemix_r1.rewards.llm_judge import (
    DEFAULT_MODEL,
    JudgeConfig,
    LLMJudge,
    default_judge,
    make_llm_reward,
    set_default_judge,
)


@pytest.fixture
def judge(judge_stub):
    url, _ = judge_stub
    return LLMJudge(JudgeConfig(base_url=url, model="stub-judge", api_key="sk-test", timeout_s=0.3, max_workers=4))


def test_verdicts_and_request(judge, judge_stub):
    _, stub = judge_stub
    llm = make_llm_reward(judge)
    before = len(stub.requests)
    scores = llm(
        ["<think>..</think><answer>Paris</answer>", "<answer>Lyon</answer>", "Paris"],
        solution=["<answer> Paris </answer>", "Paris", "Paris"],
    )
    assert scores == [1.0, 0.0, 0.0]  # the third has no answer block: 0 without a call
    assert len(stub.requests) - before == 2
    body = stub.requests[-1]
    assert body["model"] == "stub-judge" and body["temperature"] == 0
    assert [m["role"] for m in body["messages"]] == ["user", "user"]
    assert body["messages"][0]["content"].startswith("You are a evaluation expert.")  # VLM-R1's wording
    assert stub.paths[-1] == "/v1/chat/completions"
    assert stub.headers[-1]["Authorization"] == "Bearer sk-test"
    assert (judge.calls, judge.failures) == (2, 0)


@pytest.mark.parametrize(
    "answer, reason",
    [
        ("HTTP500", "HTTPError 500"),
        ("SLOW", "timeout"),
        ("NOTJSON", "JSONDecodeError"),
        ("NOCHOICES", "KeyError"),
        ("GARBLED", "bad reply"),
        ("FRACTION", "bad reply"),  # VLM-R1 float()s the reply: "0.7" became the reward
    ],
)
def test_failures_score_zero_and_are_counted(judge, answer, reason):
    scores = make_llm_reward(judge)([f"<answer>{answer}</answer>"], solution=[answer])
    assert scores == [0.0]  # VLM-R1 falls back to exact string match here, which would give 1.0
    assert judge.failures == 1 and judge.failure_reasons == {reason: 1}


def test_unreachable_endpoint_is_a_counted_failure():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    judge = LLMJudge(JudgeConfig(base_url=f"http://127.0.0.1:{port}/v1", timeout_s=0.5))
    scores = make_llm_reward(judge)(["<answer>x</answer>", "<answer>y</answer>"], solution=["x", "x"])
    assert scores == [0.0, 0.0]
    assert judge.failures == 2 and judge.failure_reasons == {"URLError": 2}


def test_verdicts_are_cached_failures_are_not(judge):
    llm = make_llm_reward(judge)
    llm(["<answer>Paris</answer>"] * 3, solution=["Paris"] * 3)
    assert judge.calls <= 3
    calls = judge.calls
    llm(["<answer>Paris</answer>"], solution=["Paris"])
    assert judge.calls == calls  # served from the cache
    llm(["<answer>HTTP500</answer>"], solution=["x"])
    llm(["<answer>HTTP500</answer>"], solution=["x"])
    assert judge.failures == 2


def test_many_rows_keep_their_order(judge):
    answers = [f"<answer>{k}</answer>" for k in range(12)]
    golds = [str(k if k % 3 else k + 1) for k in range(12)]
    assert make_llm_reward(judge)(answers, solution=golds) == [0.0 if k % 3 == 0 else 1.0 for k in range(12)]


def test_default_judge_from_env(monkeypatch, judge_stub):
    url, _ = judge_stub
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.setenv("OPENAI_API_BASE", url)  # VLM-R1's variable
    monkeypatch.delenv("PADDLEMIX_R1_JUDGE_MODEL", raising=False)
    set_default_judge(None)
    try:
        assert get_reward("llm")(["<answer>4</answer>", "<answer>HTTP500</answer>"], solution=["4", "4"]) == [1.0, 0.0]
        assert default_judge().config.model == DEFAULT_MODEL
        assert default_judge().failures == 1  # the count is exposed where the reward's judge lives
        assert get_reward("accuracy")(["<answer>4</answer>"], solution=["4"], accu_reward_method=["llm"]) == [1.0]
    finally:
        set_default_judge(None)


def test_no_endpoint_configured_raises(monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_API_BASE", raising=False)
    set_default_judge(None)
    with pytest.raises(RuntimeError, match="OPENAI_BASE_URL"):
        get_reward("llm")(["<answer>4</answer>"], solution=["4"])
    # no call is needed without an answer block, and the configuration is only read when one is
    assert get_reward("llm")(["4"], solution=["4"]) == [0.0]


def test_config_is_checked():
    with pytest.raises(ValueError, match="http"):
        JudgeConfig(base_url="127.0.0.1:8000")
    with pytest.raises(ValueError, match="timeout_s"):
        JudgeConfig(base_url="http://127.0.0.1:1/v1", timeout_s=0)
    assert JudgeConfig.from_env({"OPENAI_BASE_URL": "http://a/v1", "OPENAI_API_BASE": "http://b/v1"}).base_url == (
        "http://a/v1"
    )
