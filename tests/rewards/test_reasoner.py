"""The reasoner reward: RACRO's prompt, boxed extraction and grading on literals; in-process and a stub
OpenAI-compatible server on 127.0.0.1 give the same scores; failures score 0 and are counted."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from paddlemix_r1.rewards import get_reward
from paddlemix_r1.rewards.math_answer import MathVerifier
from paddlemix_r1.rewards.reasoner import (
    HTTPReasoner,
    InProcessReasoner,
    ReasonerConfig,
    grade_boxed,
    last_boxed,
    make_reasoner_reward,
    reasoner_messages,
    set_default_reasoner,
    strip_boxed,
)


@pytest.fixture(scope="module")
def verifier():
    with MathVerifier() as v:
        yield v


def test_prompt_is_racros_training_prompt():
    msgs = reasoner_messages("A red square.", "<image>How many? Please try to answer the question with short words "
                                              "or phrases if possible.")
    assert msgs[0] == {"role": "system", "content": "You are a helpful assistant."}
    assert msgs[1]["content"] == ("### The detailed caption of the provided image: A red square.\n\n### Question: "
                                  "<image>How many?  Please think step by step. The final answer MUST BE put in "
                                  "\\boxed{}.")


def test_last_boxed_and_gold_stripping():
    assert last_boxed("so \\boxed{1} then \\boxed{\\frac{1}{2}}.") == "\\frac{1}{2}"
    assert last_boxed("\\boxed{unclosed") is None and last_boxed("no box") is None
    assert strip_boxed(" \\boxed{60} ") == "60" and strip_boxed("\\boxed{1}+\\boxed{2}") == "\\boxed{1}+\\boxed{2}"


def test_grading(verifier):
    assert grade_boxed("60", "60", verifier) == "correct"
    assert grade_boxed("\\frac{1}{2}", "0.5", verifier) == "correct"
    assert grade_boxed("7", "60", verifier) == "wrong"
    assert grade_boxed("B", "B", verifier) == "correct" and grade_boxed("(C)", "B", verifier) == "wrong"
    assert grade_boxed("Yes", "yes", verifier) == "correct"  # a word gold: string match (mathruler's first step)
    assert grade_boxed(None, "60", verifier) == "no_boxed"


class _Stub(BaseHTTPRequestHandler):
    """Chat completions: a reply per caption keyword, or answers from an in-process reasoner (``backend``)."""

    backend = None
    requests: list = []

    def log_message(self, *args):  # keep the test output clean
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append(body)
        user = body["messages"][-1]["content"]
        if "HTTP500" in user:
            self.send_response(500)
            self.end_headers()
            return
        if "GARBAGE" in user:
            payload = b"not json"
        else:
            if type(self).backend is not None:
                texts = type(self).backend.answer([body["messages"]])[0]
            elif "NOBOX" in user:
                texts = ["the answer is 3"] * body["n"]
            elif "SHORT" in user:
                texts = ["\\boxed{3}"]
            else:
                texts = ["thinking... \\boxed{3}", "\\boxed{4}"][: body["n"]]
            payload = json.dumps({"choices": [{"index": i, "message": {"role": "assistant", "content": t}}
                                              for i, t in enumerate(texts)]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    _Stub.requests, _Stub.backend = [], None
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()
    httpd.server_close()


def test_server_scores_mean_correctness_and_counts_failures(server, verifier):
    reasoner = HTTPReasoner(ReasonerConfig(url=server, num_samples=2, temperature=0.7, max_tokens=64, max_workers=2))
    reward = make_reasoner_reward(reasoner, verifier)
    captions = ["three squares", "HTTP500", "GARBAGE", "NOBOX", "SHORT"]
    scores = reward(captions, problem=["How many?"] * 5, solution=["\\boxed{3}"] * 5)
    assert scores == [0.5, 0.0, 0.0, 0.0, 0.5]
    stats = reasoner.stats()
    assert stats["calls"] == 5 and stats["failures"] == 2 + 2 + 1 and stats["no_boxed"] == 2
    assert reasoner.failure_reasons["HTTPError 500"] == 2 and reasoner.failure_reasons["short reply"] == 1
    assert stats["generation_seconds"] > 0
    sent = _Stub.requests[0]
    assert (sent["n"], sent["temperature"], sent["max_tokens"]) == (2, 0.7, 64)


def test_unreachable_server_scores_zero(verifier):
    reasoner = HTTPReasoner(ReasonerConfig(url="http://127.0.0.1:9/v1", timeout_s=2))
    assert make_reasoner_reward(reasoner, verifier)(["a"], problem=["q"], solution=["1"]) == [0.0]
    assert reasoner.stats()["failures"] == 1


def test_registered_reward_needs_an_installed_reasoner():
    set_default_reasoner(None)
    with pytest.raises(RuntimeError, match="reasoner_model_path"):
        get_reward("reasoner")(["a"], problem=["q"], solution=["1"])


def test_config_fields_and_validation():
    cfg = ReasonerConfig.from_fields({"reasoner_url": "http://h:1/v1", "reasoner_num_samples": 3, "other": 1})
    assert (cfg.url, cfg.num_samples, cfg.model_path) == ("http://h:1/v1", 3, None)
    with pytest.raises(ValueError, match="exactly one"):
        ReasonerConfig()


@pytest.fixture(scope="module")
def tiny_reasoner(tmp_path_factory):
    """A tiny text reasoner briefly SFT-trained to answer in \\boxed{} (it has not learned to read the count
    yet, so its answers differ by caption only a little: enough for scores of both kinds)."""
    from paddlemix_r1.racro_demo import train_reasoner

    path = train_reasoner(str(tmp_path_factory.mktemp("reasoner") / "r"), steps=60, seed=0, hidden=64)
    return InProcessReasoner.load(ReasonerConfig(model_path=path, temperature=0.0, max_tokens=10, batch_size=4))


@pytest.mark.slow  # trains the tiny reasoner first (about 10 s alone, longer on a loaded machine)
def test_in_process_and_server_give_the_same_scores(tiny_reasoner, server, verifier):
    from paddlemix_r1.racro_demo import QUESTION, caption_of

    _Stub.backend = tiny_reasoner  # the server answers with the same frozen model, greedily
    captions = [caption_of(k) for k in (1, 2, 3)] + ["a picture", "There are 2 red squares and 1 circle."]
    cols = dict(problem=[QUESTION] * 5, question=[f"<image>{QUESTION}"] * 5, solution=["1", "2", "3", "1", "2"])
    local = make_reasoner_reward(tiny_reasoner, verifier)(captions, **cols)
    remote_reasoner = HTTPReasoner(ReasonerConfig(url=server, temperature=0.0, max_tokens=10))
    remote = make_reasoner_reward(remote_reasoner, verifier)(captions, **cols)
    assert local == remote
    assert 0 < sum(local) < len(local)  # graded answers of both kinds, not all zeros
    assert remote_reasoner.stats()["failures"] == 0
