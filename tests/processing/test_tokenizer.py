"""Tokenizer, chat template and the tiny tokenizer builder."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import paddle
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from paddlemix_r1.processing.tiny import (
    QWEN2_VL_CHAT_TEMPLATE,
    QWEN_SPECIAL_TOKENS,
    build_tiny_tokenizer,
)
from paddlemix_r1.processing.tokenizer import Tokenizer

EXPECTED_IDS = {
    "vocab_size": 512,
    "image_token_id": 510,
    "video_token_id": 511,
    "vision_start_token_id": 507,
    "vision_end_token_id": 508,
    "vision_token_id": 509,
    "eos_token_id": 500,
    "pad_token_id": 498,
    "bos_token_id": 498,
}

CONVERSATIONS = {
    "string_content": [{"role": "user", "content": "How many apples are there?"}],
    "image_then_text": [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Locate the dog."}]},
    ],
    "system_and_turns": [
        {"role": "system", "content": "Answer in <answer> </answer> tags."},
        {"role": "user", "content": [{"type": "text", "text": "Compare "}, {"type": "image"}, {"type": "image"}]},
        {"role": "assistant", "content": "<think>two</think><answer>2</answer>"},
        {"role": "user", "content": "Why?"},
    ],
    "image_key_parts": [
        {"role": "user", "content": [{"type": "image", "image": "a.jpg"}, {"type": "text", "text": "What is it?"}]},
    ],
}


def test_tiny_ids_are_fixed(tiny_checkpoint):
    path, ids = tiny_checkpoint
    assert ids == EXPECTED_IDS
    tok = Tokenizer.from_pretrained(path)
    assert len(tok) == 512
    assert [tok.token_to_id(t) for t in QWEN_SPECIAL_TOKENS] == list(range(498, 512))
    assert tok.eos_token == "<|im_end|>" and tok.eos_token_id == 500
    assert tok.pad_token == "<|endoftext|>" and tok.pad_token_id == 498
    assert tok.bos_token_id is None  # as in Qwen2-VL's tokenizer_config.json
    assert tok.all_special_ids == list(range(498, 512))


def test_tiny_build_is_deterministic_across_processes(tmp_path, tiny_checkpoint):
    path, _ = tiny_checkpoint
    code = (
        "import sys; from paddlemix_r1.processing.tiny import build_tiny_tokenizer; build_tiny_tokenizer(sys.argv[1])"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True)
    assert (tmp_path / "tokenizer.json").read_bytes() == (path / "tokenizer.json").read_bytes()


def test_tiny_module_needs_neither_torch_nor_transformers(tmp_path):
    code = (
        "import sys; from paddlemix_r1.processing.tiny import build_tiny_tokenizer; "
        "from paddlemix_r1.processing import Processor; "
        "build_tiny_tokenizer(sys.argv[1]); Processor.from_pretrained(sys.argv[1]); "
        "bad = [m for m in ('torch', 'transformers') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True)


def test_tiny_files_have_the_published_layout(tiny_checkpoint):
    path, _ = tiny_checkpoint
    config = json.loads((path / "tokenizer_config.json").read_text())
    assert config["chat_template"] == QWEN2_VL_CHAT_TEMPLATE
    assert config["tokenizer_class"] == "Qwen2Tokenizer"
    assert json.loads((path / "chat_template.json").read_text()) == {"chat_template": QWEN2_VL_CHAT_TEMPLATE}
    pre = json.loads((path / "preprocessor_config.json").read_text())
    assert pre["min_pixels"] == 56 * 56 and pre["max_pixels"] == 28 * 28 * 64
    assert (pre["patch_size"], pre["temporal_patch_size"], pre["merge_size"]) == (14, 2, 2)
    assert pre["image_processor_type"] == "Qwen2VLImageProcessor"


def test_tiny_vocab_covers_the_task_words(tiny_checkpoint):
    tok = Tokenizer.from_pretrained(tiny_checkpoint[0])
    vocab = tok.backend.get_vocab()
    for word in ["<think", "think", "answer", "Ġbounding", "Ġbox", "Ġangle", "Ġtriangle", "Ġcircle", "Ġmany", "user"]:
        assert word in vocab, word
    text = '<think>3 + 2 = 5</think><answer>[{"bbox_2d": [12.5, 34, 560, 78]}]</answer> 140° 中文'
    assert tok.decode(tok.encode(text)) == text


@pytest.mark.parametrize("name", sorted(CONVERSATIONS))
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_chat_template_matches_transformers(tiny_checkpoint, name, add_generation_prompt):
    transformers = pytest.importorskip("transformers")
    path, _ = tiny_checkpoint
    ref = transformers.AutoTokenizer.from_pretrained(str(path))
    ours = Tokenizer.from_pretrained(path)
    conversation = CONVERSATIONS[name]
    expected = ref.apply_chat_template(conversation, tokenize=False, add_generation_prompt=add_generation_prompt)
    assert ours.apply_chat_template(conversation, add_generation_prompt=add_generation_prompt) == expected
    # extra template variables pass through
    expected = ref.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True, add_vision_id=True)
    assert ours.apply_chat_template(conversation, add_generation_prompt=True, add_vision_id=True) == expected


def test_rendered_prompt_text(tiny_checkpoint):
    tok = Tokenizer.from_pretrained(tiny_checkpoint[0])
    text = tok.apply_chat_template(CONVERSATIONS["image_then_text"], add_generation_prompt=True)
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Locate the dog.<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


_PIECES = list("abcXYZ019 \n\t.,()[]{}<>/°é中") + ["<|im_start|>", "<|image_pad|>", "'s", "  ", "e\u0301"]
_TEXT = st.lists(st.sampled_from(_PIECES), max_size=40).map("".join)


@settings(max_examples=60, deadline=None)
@given(texts=st.lists(_TEXT, min_size=1, max_size=3))
def test_encode_matches_transformers(tiny_checkpoint, texts):
    transformers = pytest.importorskip("transformers")
    path, _ = tiny_checkpoint
    ref = _reference_tokenizer(transformers, path)
    ours = Tokenizer.from_pretrained(path)
    assert ours.encode_batch(texts) == [ref(t, add_special_tokens=False)["input_ids"] for t in texts]


_REFERENCE_TOKENIZERS: dict = {}


def _reference_tokenizer(transformers, path):
    if path not in _REFERENCE_TOKENIZERS:
        _REFERENCE_TOKENIZERS[path] = transformers.AutoTokenizer.from_pretrained(str(path))
    return _REFERENCE_TOKENIZERS[path]


def test_decode_accepts_lists_arrays_and_paddle_tensors(tiny_checkpoint):
    tok = Tokenizer.from_pretrained(tiny_checkpoint[0])
    ids = tok.encode("<|im_start|>assistant\n<answer>5</answer><|im_end|>")
    assert tok.decode(ids) == "<|im_start|>assistant\n<answer>5</answer><|im_end|>"
    assert tok.decode(np.asarray(ids), skip_special_tokens=True) == "assistant\n<answer>5</answer>"
    padded = paddle.to_tensor([[498, 498] + ids, ids + [498, 498]], dtype="int64")
    assert tok.batch_decode(padded, skip_special_tokens=True) == ["assistant\n<answer>5</answer>"] * 2
    assert tok.batch_decode([ids[:2], ids]) == [tok.decode(ids[:2]), tok.decode(ids)]
    with pytest.raises(ValueError, match="1-D"):
        tok.decode(np.asarray([ids]))


def test_chat_template_lookup_order(tmp_path):
    build_tiny_tokenizer(tmp_path)
    conversation = [{"role": "user", "content": "hi"}]
    # chat_template.json and tokenizer_config.json carry the same template
    assert Tokenizer.from_pretrained(tmp_path).apply_chat_template(conversation).startswith("<|im_start|>system")
    (tmp_path / "chat_template.jinja").write_text("J{% for m in messages %}{{ m['content'] }}{% endfor %}")
    assert Tokenizer.from_pretrained(tmp_path).apply_chat_template(conversation) == "Jhi"
    (tmp_path / "chat_template.jinja").unlink()
    (tmp_path / "chat_template.json").write_text(json.dumps({"chat_template": "C{{ messages[0]['content'] }}"}))
    assert Tokenizer.from_pretrained(tmp_path).apply_chat_template(conversation) == "Chi"
    (tmp_path / "chat_template.json").unlink()
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    config["chat_template"] = [
        {"name": "tool_use", "template": "T"},
        {"name": "default", "template": "D{{ eos_token }}"},
    ]
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    assert Tokenizer.from_pretrained(tmp_path).apply_chat_template(conversation) == "D<|im_end|>"
    del config["chat_template"]
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="no chat template"):
        Tokenizer.from_pretrained(tmp_path).apply_chat_template(conversation)


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        Tokenizer.from_pretrained(tmp_path)
    build_tiny_tokenizer(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({**config, "eos_token": "<|nope|>"}))
    with pytest.raises(ValueError, match=r"eos_token '<\|nope\|>' is not in the vocabulary"):
        Tokenizer.from_pretrained(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"tokenizer_config\.json is not valid JSON"):
        Tokenizer.from_pretrained(tmp_path)
