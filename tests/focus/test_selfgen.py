"""visrl-generate: Visual-CoT rows in, VisRL's filter on injected judge scores, each trajectory sampled once."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from paddlemix_r1.focus import selfgen, trajectory
from paddlemix_r1.focus.judges import AnswerCase, CropCase, EndpointJudge, RuleJudge, parse_score
from paddlemix_r1.focus.selfgen import GenerateConfig, read_viscot, run_generate, select_pair
from paddlemix_r1.rewards import coords
from paddlemix_r1.rewards.coords import box_iou
from paddlemix_r1.rewards.llm_judge import JudgeConfig
from paddlemix_r1.rewards.parsing import parse_box

K = 3
# Scripted box texts per item: 2K per item, [first of attempts 0..2, second of attempts 0..2]. Item 5 repeats
# attempt 0's first box as its second box (IoU 1 > 0.05): the diversity rule must replace it.
BOXES = ["[0.0, 0.0, 0.5, 0.5]", "[0.5, 0.0, 1.0, 0.5]", "[0.0, 0.5, 0.5, 1.0]",
         "[0.5, 0.5, 1.0, 1.0]", "[0.1, 0.1, 0.3, 0.3]", "garbage, no box"]
# Injected (answer score, crop score) by item and by trajectory position (attempt a: 2a first, 2a + 1 second).
SCORES = {
    0: [(1.0, 0.9), (0.0, 0.1), (0.5, 0.5), (0.5, 0.5), (1.0, 0.95), None],  # kept: chosen (a0, t0), rejected (a0, t1)
    1: [(0.7, 0.9), (0.0, 0.1), (0.5, 0.5), (0.5, 0.5), (0.6, 0.9), None],  # best 0.7 < 0.8: dropped
    2: [(1.0, 0.5), (0.0, 0.1), (0.5, 0.5), (0.5, 0.5), (1.0, 0.7), None],  # no chosen with crop >= 0.8: dropped
    3: [(1.0, 0.9), (1.0, 0.1), (1.0, 0.5), (1.0, 0.5), (1.0, 0.9), None],  # max == min: dropped
    4: [(1.0, 0.9), (0.1, 0.3), (0.5, 0.5), (0.2, 0.5), (1.0, 0.9), None],  # no rejected with crop <= 0.2: dropped
    5: [(0.9, 0.85), (0.2, 0.2), (0.2, 0.0), (0.9, 0.9), (0.5, 0.5), None],  # kept: chosen a0 t0, rejected a0 t1
}


class ScriptedJudge:
    """Injected scores: each trajectory's (answer, crop) from SCORES, found through the box it wrote."""

    def __init__(self, items):
        self.answer_cases = 0
        self.position = {}  # (item, box) -> trajectory position, for the scripted boxes
        for i in range(len(items)):
            for a in range(K):
                for j, text in ((0, BOXES[a]), (1, BOXES[K + a])):
                    box = parse_box(text)
                    if box is not None:
                        self.position.setdefault((i, box), 2 * a + j)

    def _score(self, question: str, box, which: int) -> float:
        item = int(question.split("#")[1])
        key = (item, tuple(box))
        return SCORES[item][self.position[key]][which] if key in self.position else 0.5  # a diversity box

    def score_answers(self, cases):
        self.answer_cases += len(cases)
        return [self._score(c.question, c.box, 0) for c in cases]

    def score_crops(self, cases):
        return [self._score(c.question, c.box, 1) for c in cases]


def _items(viscot_file):
    path, root = viscot_file
    items = read_viscot([path], root)
    for i, it in enumerate(items):
        it["question"] = f"#{i}# " + it["question"]
    return items


def test_read_viscot_rows(viscot_file) -> None:
    path, root = viscot_file
    items = read_viscot([path], root)
    assert len(items) == 6 and items[0]["answer"] == "red" and items[0]["question"] == "What colour is the square?"
    # The ### pixel box wins over the gpt box, and becomes a FOCUS box of the original image.
    assert items[1]["evidence"] == pytest.approx(coords.original_to_focus((21, 30, 91, 111), (300, 200)))
    rows = json.loads(open(path).read())
    rows[0]["image"] = rows[0]["image"][0]  # no ### box: the gpt box, converted from the padded square
    open(path, "w").write(json.dumps(rows))
    first = read_viscot([path], root)[0]
    assert first["evidence"] == pytest.approx(coords.viscot_to_focus((0.1, 0.2, 0.3, 0.4), (180, 240)))
    rows[2]["conversations"] = rows[2]["conversations"][:1]
    open(path, "w").write(json.dumps(rows))
    with pytest.raises(ValueError, match=r"viscot.json:2: field 'conversations'"):
        read_viscot([path], root)


def test_select_pair_thresholds() -> None:
    t = [{"acc": 1.0, "crop": 0.8}, {"acc": 0.2, "crop": 0.2}]
    assert select_pair(t) == (t[0], t[1])  # both thresholds are inclusive
    assert select_pair([{"acc": 0.79, "crop": 1.0}, {"acc": 0.0, "crop": 0.0}]) is None
    assert select_pair([{"acc": 1.0, "crop": 1.0}, {"acc": 0.21, "crop": 0.0}]) is None
    assert select_pair([{"acc": 0.5, "crop": 0.9}, {"acc": 0.5, "crop": 0.1}], high=0.5, low=0.5) is None  # max == min
    # A trajectory with a failed judgement is dropped, not scored 0.
    assert select_pair([{"acc": 1.0, "crop": 0.9}, {"acc": None, "crop": 0.0}]) is None
    rest = [{"acc": 1.0, "crop": 0.9}, {"acc": 0.0, "crop": None}, {"acc": 0.1, "crop": 0.1}]
    assert select_pair(rest) == (rest[0], rest[2])  # the failed one is not the worst: it is gone
    three = [{"acc": 1.0, "crop": 0.5}, {"acc": 1.0, "crop": 0.9}, {"acc": 0.0, "crop": 0.3}, {"acc": 0.0, "crop": 0.0}]
    assert select_pair(three) == (three[1], three[3])  # the FIRST qualifying of each


def test_generation_and_filter_on_a_tiny_model(tiny_focus_model, viscot_file, tmp_path, monkeypatch) -> None:
    """The whole generator on a tiny model, with scripted box texts and injected judge scores: the records
    are exactly the filter's choices, and every trajectory's turns are sampled once."""
    model, proc, _ = tiny_focus_model
    items = _items(viscot_file)
    calls = []
    real_generate = trajectory.generate

    def counting_generate(model, batch, **kw):
        calls.append((int(batch["input_ids"].shape[0]), kw["num_return_sequences"]))
        return real_generate(model, batch, **kw)

    monkeypatch.setattr(trajectory, "generate", counting_generate)
    real_boxes = selfgen.generate_boxes

    def scripted_boxes(*args, **kw):
        turn = real_boxes(*args, **kw)  # the real sampling pass; its texts are replaced by the script
        turn.texts = BOXES * (len(turn.texts) // len(BOXES))
        return turn

    monkeypatch.setattr(selfgen, "generate_boxes", scripted_boxes)
    judge = ScriptedJudge(items)
    out = tmp_path / "pairs.json"
    cfg = GenerateConfig(output=str(out), attempts=K, temperature=2.0, max_box_tokens=4, max_answer_tokens=3,
                         batch_size=6, seed=0)
    result = run_generate(cfg, items=items, model=model, processor=proc, judge=judge)

    records = json.loads(out.read_text())
    trajs = [json.loads(line) for line in open(str(out) + ".trajectories.jsonl")]
    usable = [t for t in trajs if t["box"] is not None]
    # One box pass (6 items x 2K samples) and one answer pass (one row per usable trajectory): each once.
    assert calls == [(6, 2 * K), (len(usable), 1)]
    assert judge.answer_cases == len(usable) == 6 * 5  # the 6th box text of every item is unparsable
    assert sum(t["status"] == "unparsable" for t in trajs) == 6
    # Item 5's second box of attempt 0 was a copy of the first: replaced by one that does not overlap it.
    a0 = [t for t in trajs if t["item"] == str(items[5]["id"]) and t["attempt"] == 0]
    assert box_iou(a0[0]["box"], a0[1]["box"]) == 0.0 and a0[1]["box_text"] != BOXES[0]
    # Exactly items 0 and 5 survive the filter, with the first qualifying chosen / rejected trajectories.
    assert len(records) == len(result.records) == 2
    assert [r["chosen_step"]["value"] for r in records] == [BOXES[0], BOXES[0]]
    assert records[0]["rejected_step"]["value"] == BOXES[K + 0]
    for rec in records:
        assert set(rec) == {"images", "conversations", "chosen_step", "rejected_step", "chosen", "rejected"}
        assert rec["conversations"][0]["from"] == "human" and rec["conversations"][0]["value"].startswith("<image>\n")
        assert rec["chosen_step"]["from"] == "gpt" and isinstance(rec["chosen"]["value"], str)
    assert result.generated_tokens > 0


def test_rule_judge(viscot_file) -> None:
    from PIL import Image

    img = Image.new("RGB", (10, 10))
    judge = RuleJudge()
    assert judge.score_answers([AnswerCase("q", "Red", "<answer>red.</answer>", img),
                                AnswerCase("q", "red", "blue", img)]) == [1.0, 0.0]
    assert judge.score_crops([CropCase("q", "red", img, (0, 0, 0.5, 0.5), (0.1, 0.1, 0.2, 0.2))]) == [1.0]
    with pytest.raises(ValueError, match="item-7: the rule-based crop judge needs"):
        judge.score_crops([CropCase("q", "red", img, (0, 0, 0.5, 0.5), None, "item-7")])


@pytest.mark.parametrize("reply,score", [('{"score": 0.8}', 0.8), ('```json\n{"score": 1}\n```', 1.0), ("0.3", 0.3),
                                         ("score: 0.5", None), ('{"score": 1.7}', None), ("true", None)])
def test_parse_score(reply: str, score) -> None:
    assert parse_score(reply) == score


class _Stub(BaseHTTPRequestHandler):
    replies: list[str] = []
    requests: list[dict] = []

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append(body)
        reply = type(self).replies.pop(0)
        data = json.dumps({"choices": [{"message": {"role": "assistant", "content": reply}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        return


def test_endpoint_judge_sends_visrl_prompts_with_the_image() -> None:
    from PIL import Image

    server = HTTPServer(("127.0.0.1", 0), _Stub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        _Stub.replies[:] = ['{"score": 0.9}', "not a score", '```json\n{"score": 0.1}\n```']
        _Stub.requests.clear()
        judge = EndpointJudge(JudgeConfig(base_url=f"http://127.0.0.1:{server.server_port}/v1", model="judge",
                                          timeout_s=5.0, max_workers=1))
        img = Image.new("RGB", (8, 6), (255, 0, 0))
        assert judge.score_answers([AnswerCase("What colour?", "red", "red", img),
                                    AnswerCase("What colour?", "red", "blue", img)]) == [0.9, None]
        assert judge.score_crops([CropCase("What colour?", "red", img, (0, 0, 1, 1), None)]) == [0.1]
        assert judge.client.failures == 1  # the unreadable reply: counted, and None (dropped by the filter)
        first, crop = _Stub.requests[0], _Stub.requests[2]
        assert first["temperature"] == 0
        parts = first["messages"][0]["content"]
        assert parts[0]["image_url"]["url"].startswith("data:image/png;base64,")
        assert parts[1]["text"].startswith("You are responsible for proofreading the answers")
        assert parts[1]["text"].endswith("Question: What colour?\nStandard answer: red\nModel's answer: red")
        assert crop["messages"][0]["content"][1]["text"].startswith("You are responsible for verifying the relevance")
    finally:
        server.shutdown()
