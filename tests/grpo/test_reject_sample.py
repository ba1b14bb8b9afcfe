"""Rejection-sampling SFT: select_best / judge-score parsing / ms-swift records on literals; the sampling loop
with a tiny model scored by task rewards and by a stub 0-100 judge on 127.0.0.1 (failures score 0 and are
counted); SFT on the written JSONL with the vision tower frozen or not; the ``reject-sample`` command."""

from __future__ import annotations

import glob
import json
import math
import os
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from paddlemix_r1 import atomic
from paddlemix_r1.cli import main as cli_main
from paddlemix_r1.data.readers import read_training_files
from paddlemix_r1.data.synthetic import counting_rows, write_jsonl_dataset
from paddlemix_r1.grpo.reject_sample import (
    RejectSampleConfig,
    RewardScorer,
    ScoreJudge,
    parse_score,
    sample_and_score,
    select_best,
    sft_record,
    sft_records,
)
from paddlemix_r1.grpo.sft import read_sft_jsonl, run_sft
from paddlemix_r1.models import build_tiny_checkpoint, from_pretrained
from paddlemix_r1.processing import Processor
from paddlemix_r1.rewards import list_rewards, register_reward
from paddlemix_r1.rewards.llm_judge import JudgeConfig
from paddlemix_r1.tasks import get_task, reward_columns

N = 3  # completions per prompt
TOKENS = 6


def _length_reward(completions, **_):
    return [len(c) / 10 for c in completions]


if "test_rs_length" not in list_rewards():
    register_reward("test_rs_length", _length_reward)


# ----- literals ---------------------------------------------------------------------------------


@pytest.mark.parametrize("scores, threshold, best", [
    ([0.2, 0.9, 0.9, 0.5], 0.5, 1),       # highest; the first of tied ones
    ([0.2, 0.9, 0.9, 0.5], 0.95, None),   # none reaches the threshold
    ([85.0, 86.0], 86, 1),                # at the threshold is kept
    ([float("nan"), 1.0], 0.0, 1),        # NaN is never kept
    ([float("nan")], -math.inf, None),
    ([], 0.0, None),
    ([-1.0, -3.0], -2.0, 0),
])
def test_select_best(scores, threshold, best):
    assert select_best(scores, threshold) == best


@pytest.mark.parametrize("reply, score", [
    ("90", 90.0), (" 7\n", 7.0), ("100", 100.0), ("0", 0.0),
    ("101", None), ("85.5", None), ("Score: 90", None), ("-1", None), ("ninety", None), ("", None),
])
def test_parse_score(reply, score):
    assert parse_score(reply) == score


def test_sft_record_round_trip_and_errors(tmp_path):
    img = tmp_path / "a.png"
    counting_rows(1, seed=0)[0]["images"][0].save(img)
    rec = sft_record("How many? Answer in tags.", "<think>x</think><answer>3</answer>", [str(img)])
    assert rec == {"messages": [{"role": "user", "content": "<image>How many? Answer in tags."},
                                {"role": "assistant", "content": "<think>x</think><answer>3</answer>"}],
                   "images": [str(img)]}
    system = {"messages": [{"role": "system", "content": "You are a helpful assistant"}, *rec["messages"]],
              "images": ["a.png"]}  # relative: resolved against image_root
    path = atomic.write_jsonl(str(tmp_path / "sft.jsonl"), [rec, system])
    rows = read_sft_jsonl(path, image_root=str(tmp_path))
    assert rows[0]["answer"] == "<think>x</think><answer>3</answer>" and rows[0]["images"] == [str(img)]
    assert rows[0]["conversation"] == [{"role": "user", "content": [{"type": "image"},
                                                                    {"type": "text", "text": "How many? Answer in tags."}]}]
    assert rows[1]["conversation"][0] == {"role": "system", "content": "You are a helpful assistant"}
    with pytest.raises(ValueError, match="needs image file paths"):
        sft_record("q", "a", [counting_rows(1)[0]["images"][0]], where="row 7")
    bad = [
        ({**rec, "images": []}, r"sft.jsonl:1: the user turn has 1 <image> tags for 0 images"),
        ({**rec, "images": [str(tmp_path / "gone.png")]}, r"sft.jsonl:1: field 'images': image file not found"),
        ({"messages": rec["messages"] * 2, "images": [str(img)]}, r"sft.jsonl:1: .*one exchange"),
        ({"images": [str(img)]}, r"sft.jsonl:1: field 'messages'"),
    ]
    for record, match in bad:
        atomic.write_jsonl(path, [record])
        with pytest.raises(ValueError, match=match):
            read_sft_jsonl(path)


def test_config_checks():
    with pytest.raises(ValueError, match="judge_url"):
        RejectSampleConfig(model_path="m", data_files=["d"], scorer="judge")
    with pytest.raises(ValueError, match="scorer must be"):
        RejectSampleConfig(model_path="m", data_files=["d"], scorer="gpt")
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['lr'\]"):
        RejectSampleConfig.load(None, {"model_path": "m", "data_files": ["d"], "lr": 1.0})
    configs = os.path.join(os.path.dirname(__file__), "..", "..", "configs")
    recipes = sorted(glob.glob(os.path.join(configs, "curr_reft_reject_sft_*.yaml")))
    assert recipes
    for path in recipes:
        RejectSampleConfig.load(path)  # every shipped reject-SFT recipe parses
    cfg = RejectSampleConfig.load(os.path.join(configs, "curr_reft_reject_sft_3b.yaml"))
    assert (cfg.sft_learning_rate, cfg.freeze_vision, cfg.scorer, cfg.threshold) == (2e-7, False, "judge", 86)


# ----- with a tiny model ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_checkpoint(str(tmp_path_factory.mktemp("tiny-rs")), family="qwen2_5_vl", seed=2)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Three counting rows written as a VLM-R1 JSONL with PNGs (the reader gives image paths)."""
    out = tmp_path_factory.mktemp("rs-data")
    path = write_jsonl_dataset(counting_rows(3, seed=5), str(out), "count")
    return path, str(out)


@pytest.fixture(scope="module")
def model_proc(tiny):
    return from_pretrained(tiny), Processor.from_pretrained(tiny)


def test_sampling_with_task_rewards(model_proc, data):
    model, proc = model_proc
    rows = list(read_training_files([data[0]], data[1], "counting"))
    seen = []

    def spy(rows_, prompts, completions, columns, g):
        seen.append((list(completions), columns))
        return RewardScorer()(rows_, prompts, completions, columns, g)

    outcomes = sample_and_score(model, proc, rows, spy, num_samples=N, threshold=-1.0, max_new_tokens=TOKENS,
                                batch_size=2, seed=11)
    assert [o.id for o in outcomes] == [r["id"] for r in rows] and all(len(o.completions) == N for o in outcomes)
    # the scores are the row's task's rewards (counting + format), recomputed here
    completions = [c for o in outcomes for c in o.completions]
    batch = proc([[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "x"}]}]] * 3,
                 [r["images"] for r in rows], return_sizes=True)
    cols = reward_columns(rows, batch["original_sizes"], batch["resized_sizes"], "qwen2_5_vl", N)
    assert [s for o in outcomes for s in o.scores] == get_task("counting").reward(completions, **cols)
    assert all(o.best == select_best(o.scores, -1.0) for o in outcomes)
    assert sum(len(c) for c, _ in seen) == 3 * N and len(seen) == 2  # batch_size 2: two generate calls
    # the prompt is the task's training prompt; the record writes it with the image tag
    assert outcomes[0].prompt == get_task("counting").prompt(rows[0])
    again = sample_and_score(model, proc, rows, RewardScorer(), num_samples=N, threshold=-1.0,
                             max_new_tokens=TOKENS, batch_size=2, seed=11)
    assert [o.completions for o in again] == [o.completions for o in outcomes]  # seeded


def test_named_rewards_pick_the_best_and_records_train(model_proc, data, tmp_path):
    model, proc = model_proc
    rows = list(read_training_files([data[0]], data[1], "counting"))
    outcomes = sample_and_score(model, proc, rows, RewardScorer(["test_rs_length"]), num_samples=N, threshold=0.3,
                                max_new_tokens=TOKENS, batch_size=3, seed=4)
    for o in outcomes:
        assert o.scores == [len(c) / 10 for c in o.completions]
        kept = [i for i, s in enumerate(o.scores) if s >= 0.3]
        assert o.best == (max(kept, key=lambda i: (o.scores[i], -i)) if kept else None)
    records = sft_records(rows, outcomes)
    assert len(records) == sum(o.best is not None for o in outcomes)
    assert records, "no completion reached the threshold; lower it"
    path = atomic.write_jsonl(str(tmp_path / "rs.jsonl"), records)
    examples = read_sft_jsonl(path)
    assert [e["answer"] for e in examples] == [o.completions[o.best] for o in outcomes if o.best is not None]
    assert examples[0]["images"] == rows[[o.best is not None for o in outcomes].index(True)]["images"]


def _visual_and_text(model) -> tuple[dict, dict]:
    vis = {n: p.numpy().copy() for n, p in model.visual.named_parameters()}
    txt = {n: p.numpy().copy() for n, p in model.model.named_parameters() if not n.startswith("visual")}
    return vis, txt


@pytest.mark.parametrize("freeze", [True, False])
def test_sft_on_records_freezes_vision_or_not(tiny, data, tmp_path, freeze):
    rows = list(read_training_files([data[0]], data[1], "counting"))
    recs = [sft_record(get_task("counting").prompt(r), f"<think>..</think><answer>{r['solution']}</answer>",
                       r["images"]) for r in rows]
    examples = read_sft_jsonl(atomic.write_jsonl(str(tmp_path / "sft.jsonl"), recs))
    model, proc = from_pretrained(tiny), Processor.from_pretrained(tiny)
    vis0, txt0 = _visual_and_text(model)
    losses = run_sft(model, proc, examples, lambda r: r["conversation"], lambda r, rng: r["answer"], steps=2,
                     batch_size=2, learning_rate=1e-2, freeze_vision=freeze)
    assert all(np.isfinite(losses))
    vis1, txt1 = _visual_and_text(model)
    assert any(not np.array_equal(txt0[n], txt1[n]) for n in txt0)
    assert all(np.array_equal(vis0[n], vis1[n]) for n in vis0) == freeze
    assert not any(p.stop_gradient for p in model.visual.parameters())  # flags restored after the run


# ----- a stub 0-100 judge on 127.0.0.1 ----------------------------------------------------------

_RESPONSE = re.compile(r"Model response: (.*)\nScore \(0-100\):", re.DOTALL)


def stub_rule(response: str) -> tuple[int, str]:
    """(HTTP status, reply content) the stub gives a response: every kind of failure, and scores."""
    k = len(response) % 4
    if k == 0:
        return 500, ""
    if k == 1:
        return 200, "I would say about 90"  # not a bare integer: a counted failure, not 90
    return 200, str((len(response) * 37) % 101)


def expected_score(response: str) -> float:
    status, content = stub_rule(response)
    return float(content) if status == 200 and content.isdigit() else 0.0


@pytest.fixture
def judge_stub():
    requests: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            requests.append(body)
            status, content = stub_rule(_RESPONSE.search(body["messages"][-1]["content"]).group(1))
            payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", requests
    finally:
        server.shutdown()
        server.server_close()


def test_judge_scores_and_counts_failures(model_proc, data, judge_stub):
    model, proc = model_proc
    url, requests = judge_stub
    rows = list(read_training_files([data[0]], data[1], "counting"))
    judge = ScoreJudge(JudgeConfig(base_url=url, model="stub-4o", timeout_s=5.0, max_workers=4))
    outcomes = sample_and_score(model, proc, rows, judge, num_samples=4, threshold=50, max_new_tokens=TOKENS,
                                batch_size=3, seed=1)
    completions = [c for o in outcomes for c in o.completions]
    assert [s for o in outcomes for s in o.scores] == [expected_score(c) for c in completions]
    failing = [c for c in completions if stub_rule(c)[0] != 200 or not stub_rule(c)[1].isdigit()]
    assert judge.client.failures == len(failing)
    assert set(judge.client.failure_reasons) <= {"HTTPError 500", "bad reply"}
    assert all(o.best == select_best(o.scores, 50) for o in outcomes)
    body = requests[-1]
    assert body["model"] == "stub-4o" and body["temperature"] == 0
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert all(any(f"Reference answer: {r['solution']}\n" in q["messages"][-1]["content"] for r in rows)
               for q in requests)


def test_reject_sample_command_with_judge_then_sft(tiny, data, judge_stub, tmp_path, capsys):
    url, _ = judge_stub
    out = tmp_path / "rs" / "kept.jsonl"
    code = cli_main(["reject-sample", "--model_path", tiny, "--data_files", data[0], "--image_root", data[1],
                     "--task", "counting", "--num_samples", "4", "--max_new_tokens", str(TOKENS), "--scorer", "judge",
                     "--judge_url", url, "--judge_model", "stub-4o", "--threshold", "0", "--output", str(out),
                     "--sft_steps", "1", "--sft_batch_size", "2", "--sft_learning_rate", "1e-3", "--seed", "3",
                     "--no-freeze_vision"])
    assert code == 0
    samples = [json.loads(line) for line in (tmp_path / "rs" / "kept.jsonl.samples.jsonl").read_text().splitlines()]
    summary = json.loads((tmp_path / "rs" / "kept.jsonl.summary.json").read_text())
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(samples) == summary["prompts"] == 3 and len(records) == summary["kept"]
    for s in samples:
        assert s["scores"] == [expected_score(c) for c in s["completions"]] and s["best"] == select_best(s["scores"], 0)
    n_fail = sum(expected_score(c) == 0.0 and stub_rule(c)[1] != "0" for s in samples for c in s["completions"])
    assert summary["judge"]["failures"] == n_fail
    assert summary["sft_records"] == len(records) and len(summary["sft_loss"]) == 1
    assert os.path.exists(os.path.join(summary["sft_output_dir"], "config.json"))
    assert f"kept {summary['kept']}/3" in capsys.readouterr().out
