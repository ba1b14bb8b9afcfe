"""``paddlemix-r1 racro-eval``: three steps, one JSONL each; step 3 re-runs alone with another reasoner (here
an OpenAI-compatible stub on 127.0.0.1) and reads the first two steps' files."""

from __future__ import annotations

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from paddlemix_r1.racro import RacroEvalSettings, run_racro_eval
from paddlemix_r1.rewards.reasoner import ReasonerConfig

ANSWERS = {"r0": "3", "r1": "\\frac{1}{2}", "r2": "7"}


@pytest.fixture(scope="module")
def racro_files(tmp_path_factory):
    from paddlemix_r1.models import build_tiny_checkpoint, from_pretrained
    from paddlemix_r1.models.qwen2 import build_tiny_text_checkpoint

    base = tmp_path_factory.mktemp("racro_eval")
    vlm = build_tiny_checkpoint(str(base / "vlm"), family="qwen2_5_vl", seed=0)
    model = from_pretrained(vlm)
    model.init_weights(std=0.3, seed=1)  # varied tokens: the checks below need non-empty captions
    model.save_pretrained(vlm)
    reasoner = build_tiny_text_checkpoint(str(base / "reasoner"), seed=0)
    with open(base / "data.jsonl", "w", encoding="utf-8") as f:
        for i, (rid, answer) in enumerate(ANSWERS.items()):
            Image.new("RGB", (56 + 28 * i, 56), (40 * i, 100, 200)).save(base / f"{rid}.png")
            f.write(json.dumps({"id": rid, "images": [f"{rid}.png"], "question": f"<image>Question {i}?",
                                "answer": f"\\boxed{{{answer}}}"}) + "\n")
    return base, vlm, reasoner


class _Stub(BaseHTTPRequestHandler):
    """Answers each joint prompt with the right boxed answer of the row its question names."""

    requests: list = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Stub.requests.append(body)
        text = " ".join(m["content"] for m in body["messages"])
        i = next(k for k in range(len(ANSWERS)) if f"Question {k}?" in text)
        reply = {"choices": [{"index": 0, "message": {"role": "assistant",
                                                      "content": f"so \\boxed{{{list(ANSWERS.values())[i]}}}"}}]}
        payload = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        return


def test_three_steps_then_step_three_alone_with_another_reasoner(racro_files, tmp_path):
    base, vlm, reasoner = racro_files
    out = str(tmp_path / "out")
    summary = run_racro_eval(RacroEvalSettings(
        data=str(base / "data.jsonl"), output_dir=out, vlm_path=vlm, max_new_tokens=4, batch_size=2,
        reasoner=ReasonerConfig(model_path=reasoner, max_tokens=4, temperature=0.0)))
    records = {step: [json.loads(line) for line in open(os.path.join(out, f"{step}.jsonl"), encoding="utf-8")]
               for step in ("qa", "caption", "reason")}
    assert all([r["id"] for r in rs] == list(ANSWERS) for rs in records.values())
    assert [r["answer"] for r in records["reason"]] == list(ANSWERS.values())  # outer \boxed{} stripped
    assert summary["n"] == 3 and 0.0 <= summary["accuracy"] <= 1.0 and "judge" in summary["note"]
    first = {step: os.path.getmtime(os.path.join(out, f"{step}.jsonl")) for step in ("qa", "caption")}

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        again = run_racro_eval(RacroEvalSettings(
            data=str(base / "data.jsonl"), output_dir=out, steps=["reason"],
            reasoner=ReasonerConfig(url=f"http://127.0.0.1:{server.server_address[1]}/v1", temperature=0.6,
                                    top_p=0.95)))
    finally:
        server.shutdown()
    assert (again["accuracy"], again["correct"]) == (1.0, 3)
    assert {step: os.path.getmtime(os.path.join(out, f"{step}.jsonl")) for step in ("qa", "caption")} == first
    captions = {r["id"]: r["output"] for r in records["caption"]}
    tentative = {r["id"]: r["output"] for r in records["qa"]}
    assert len(_Stub.requests) == len(ANSWERS)
    for body in _Stub.requests:  # the joint prompt carries the row's caption and tentative answer
        text = " ".join(m["content"] for m in body["messages"])
        rid = next(r for i, r in enumerate(ANSWERS) if f"Question {i}?" in text)  # requests run concurrently
        assert captions[rid].strip() and tentative[rid].strip()
        assert captions[rid].strip() in text and tentative[rid].strip() in text
        assert (body["temperature"], body["top_p"]) == (0.6, 0.95)


def test_reason_step_needs_the_earlier_steps(racro_files, tmp_path):
    base, _, reasoner = racro_files
    with pytest.raises(FileNotFoundError, match="step 'qa' has not been run"):
        run_racro_eval(RacroEvalSettings(data=str(base / "data.jsonl"), output_dir=str(tmp_path), steps=["reason"],
                                         reasoner=ReasonerConfig(model_path=reasoner)))
