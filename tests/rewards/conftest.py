"""A stub OpenAI-compatible judge on 127.0.0.1 for the ``llm`` reward's tests.

The stub answers ``POST /v1/chat/completions`` by looking at the student's answer in the request:
"1.0" when it equals the correct solution, else "0.0", except for answers that start with a trigger
word, which make it fail in one way each (see ``JudgeStub.reply``). It records every request.
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

_QUESTION = re.compile(r"Student's response: (.*)\nCorrect solution: (.*)\nOutput only 1\.0 or 0\.0:", re.DOTALL)
SLOW_S = 1.0  # how long a "SLOW" answer keeps the stub silent; judges in tests time out well before


class JudgeStub:
    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.paths: list[str] = []
        self.lock = threading.Lock()

    def reply(self, body: dict) -> tuple[int, bytes]:
        """(status, body) for one request."""
        answer, gold = _QUESTION.fullmatch(body["messages"][1]["content"]).groups()
        if answer.startswith("HTTP500"):
            return 500, b'{"error": "boom"}'
        if answer.startswith("SLOW"):
            time.sleep(SLOW_S)
        if answer.startswith("NOTJSON"):
            return 200, b"<html>not json</html>"
        if answer.startswith("NOCHOICES"):
            return 200, b'{"object": "chat.completion"}'
        if answer.startswith("GARBLED"):
            content = "Maybe 0.7, the student is close"
        elif answer.startswith("FRACTION"):
            content = "0.7"
        else:
            content = " 1.0\n" if answer.strip() == gold.strip() else "0.0"
        return 200, json.dumps(
            {"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]}
        ).encode()


@pytest.fixture(scope="session")
def judge_stub():
    """(base_url, stub): a judge endpoint on 127.0.0.1 for the whole session."""
    stub = JudgeStub()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with stub.lock:
                stub.requests.append(body)
                stub.headers.append(dict(self.headers))
                stub.paths.append(self.path)
            if self.path != "/v1/chat/completions":
                status, payload = 404, b"{}"
            else:
                status, payload = stub.reply(body)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            try:
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
                return

        def log_message(self, *args):  # keep the test output clean
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", stub
    finally:
        server.shutdown()
        server.server_close()
