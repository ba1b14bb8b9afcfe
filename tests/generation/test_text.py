"""Text-only chat generation with a text checkpoint's tokenizer and chat template; checkpoints whose tokenizer
files name no eos / pad token."""

from __future__ import annotations

import json
import os

import pytest

from paddlemix_r1.generation import generate
from paddlemix_r1.generation.text import SamplingSettings, generate_chat
from paddlemix_r1.models import build_tiny_text_checkpoint, from_pretrained
from paddlemix_r1.processing.processor import TextProcessor, load_processor
from paddlemix_r1.processing.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def text_ckpt(tmp_path_factory):
    return build_tiny_text_checkpoint(str(tmp_path_factory.mktemp("txt") / "m"), seed=1)


def test_batched_chat_generation_matches_one_by_one(text_ckpt):
    model, proc = from_pretrained(text_ckpt), load_processor(text_ckpt)
    assert isinstance(proc, TextProcessor)
    chats = [[{"role": "user", "content": "red square"}],
             [{"role": "system", "content": "You are a helpful assistant."},
              {"role": "user", "content": "how many red squares are in the image"}]]
    greedy = SamplingSettings(max_new_tokens=8, do_sample=False)
    together = generate_chat(model, proc, chats, greedy, batch_size=2)
    alone = [generate_chat(model, proc, [c], greedy)[0] for c in chats]
    assert together == alone  # left padding changes nothing
    sampled = generate_chat(model, proc, chats, SamplingSettings(max_new_tokens=8, num_samples=3), seed=5)
    assert [len(s) for s in sampled] == [3, 3]
    assert sampled == generate_chat(model, proc, chats, SamplingSettings(max_new_tokens=8, num_samples=3), seed=5)


def test_generation_stops_at_eos(text_ckpt):
    model, proc = from_pretrained(text_ckpt), load_processor(text_ckpt)
    batch = proc([[{"role": "user", "content": "one"}], [{"role": "user", "content": "two three four"}]])
    free = generate(model, batch, max_new_tokens=6, do_sample=False, pad_token_id=proc.pad_token_id)
    rows = free.completion_ids.numpy().tolist()
    eos = rows[0][1]
    out = generate(model, batch, max_new_tokens=6, do_sample=False, eos_token_id=eos, pad_token_id=proc.pad_token_id)
    for row, mask, ids in zip(rows, out.completion_mask.numpy().tolist(), out.completion_ids.numpy().tolist()):
        n = row.index(eos) + 1 if eos in row else 6  # up to and including the first eos
        assert sum(mask) == n and ids[:n] == row[:n]


def test_missing_tokenizer_config_falls_back_to_generation_config(text_ckpt, tmp_path):
    """Without tokenizer_config.json eos and pad were None and generation failed with a TypeError."""
    import shutil

    d = tmp_path / "ckpt"
    shutil.copytree(text_ckpt, d)
    ids = Tokenizer.from_pretrained(text_ckpt)
    os.remove(d / "tokenizer_config.json")
    with pytest.raises(ValueError, match=r"no eos token.*missing: tokenizer_config\.json"):
        Tokenizer.from_pretrained(d)
    (d / "generation_config.json").write_text(json.dumps({"eos_token_id": [ids.eos_token_id, 0],
                                                           "pad_token_id": ids.pad_token_id}))
    tok = Tokenizer.from_pretrained(d)
    assert (tok.eos_token, tok.pad_token) == ("<|im_end|>", "<|endoftext|>")
    model, proc = from_pretrained(str(d)), load_processor(str(d))
    out = generate_chat(model, proc, [[{"role": "user", "content": "red"}]], SamplingSettings(max_new_tokens=4))
    assert len(out) == 1


def test_pad_none_is_a_clear_error(text_ckpt):
    model, proc = from_pretrained(text_ckpt), load_processor(text_ckpt)
    with pytest.raises(ValueError, match="pad_token_id is None"):
        generate(model, proc([[{"role": "user", "content": "red"}]]), max_new_tokens=2, pad_token_id=None)
