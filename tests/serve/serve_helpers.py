"""Helpers of the server tests: limits the test server runs with, data URLs, lone generate references."""

from __future__ import annotations

import base64
import io
from pathlib import Path

from PIL import Image

API_KEY = "test-key"
MAX_MODEL_LEN = 160
MAX_IMAGES = 2
MAX_BATCH_SIZE = 8


def data_url(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def png_data_url(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def user_message(text: str, images: list[str] = ()) -> dict:
    """An OpenAI user message: image_url parts first, then the text (build_conversation's order)."""
    return {"role": "user", "content": [{"type": "image_url", "image_url": {"url": u}} for u in images]
            + [{"type": "text", "text": text}]}


class Reference:
    """A lone ``paddlemix_r1.generation.generate`` call per prompt, as ``paddlemix-r1 generate`` makes it."""

    def __init__(self, path: str) -> None:
        from paddlemix_r1.models import from_pretrained
        from paddlemix_r1.processing import Processor

        self.proc = Processor.from_pretrained(path)
        self.model = from_pretrained(path)

    def greedy(self, prompt: str, images: list[str | Path], max_tokens: int) -> tuple[list[int], int]:
        """(completion ids up to and including eos, prompt length) of a greedy generate call."""
        from paddlemix_r1.generation import generate
        from paddlemix_r1.tasks import build_conversation

        batch = self.proc([build_conversation(prompt, len(images))], [[str(p) for p in images]])
        out = generate(self.model, batch, max_new_tokens=max_tokens, do_sample=False,
                       eos_token_id=self.proc.eos_token_id, pad_token_id=self.proc.pad_token_id)
        n = int(out.completion_mask.sum())
        return out.completion_ids.numpy()[0, :n].tolist(), int(batch["input_ids"].shape[1])

    def text(self, ids: list[int]) -> str:
        return self.proc.decode(ids, skip_special_tokens=True)
