"""A tiny Qwen2-VL-style tokenizer + processor checkpoint, built locally for tests and demos.

``build_tiny_tokenizer(out_dir)`` trains a small byte-level BPE on the corpus below (fixed, so
the result is the same on every machine), appends the Qwen2-VL special tokens after the BPE
vocabulary in Qwen's order, and writes the files of a published Qwen2-VL checkpoint:
``tokenizer.json``, ``tokenizer_config.json`` and ``chat_template.json`` (both carrying the
Qwen2-VL-Instruct chat template) and ``preprocessor_config.json``.

Needs only ``tokenizers``: no torch, no transformers, no network.
"""

from __future__ import annotations

import json
import os
from typing import Any

from tokenizers import (
    AddedToken,
    Regex,
    Tokenizer,
    decoders,
    normalizers,
    pre_tokenizers,
    processors,
)
from tokenizers.models import BPE
from tokenizers.trainers import BpeTrainer

from paddlemix_r1.processing.image_processor import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

# In Qwen's order; Qwen2-VL gives them ids 151643..151656, here they follow the BPE vocabulary.
QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

# Qwen2's pre-tokenizer split (the same regex as Qwen2's tokenizer.json).
QWEN2_PRETOKENIZE_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# The chat template of Qwen2-VL-Instruct (also the processor template of Qwen2.5-VL-Instruct).
QWEN2_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Size of the trained BPE vocabulary (256 byte symbols + merges); with the 14 special tokens
# the full vocabulary is 512.
TINY_BPE_VOCAB_SIZE = 498

_CORPUS_LINES = (
    "You are a helpful assistant.",
    "system user assistant: the user asks and the assistant answers.",
    "Please provide the bounding box coordinate of the region this sentence describes: the man in the red shirt.",
    "Please provide the bounding box coordinate of the region this sentence describes: a white dog on the left.",
    "Please provide the bounding box coordinate of the region this sentence describes: the small cup near the plate.",
    "Locate the person on the right side of the image and output the bbox coordinates in JSON format.",
    "Output the final answer in JSON format.",
    "Output the thinking process in <think> </think> and final answer in <answer> </answer> tags.",
    "Output the thinking process in <think> </think> and final answer (number) in <answer> </answer> tags.",
    (
        "First output the thinking process in <think> </think> tags and then output the final answer in "
        "<answer> </answer> tags."
    ),
    (
        "The reasoning process and answer are enclosed within <think> </think> and <answer> </answer> tags, "
        "respectively, i.e., <think> reasoning process here </think><answer> answer here </answer>"
    ),
    "How many apples are there in the image?",
    "How many people are in the picture? Count the cars, the birds, the chairs and the bottles.",
    "How many items are there in the image? There are 3 cats and 12 dogs, so the total is 15.",
    "Question: how many objects are on the table? Answer: 7",
    "As shown in the figure, AB is the diameter of circle O, C and D are two points on the circle.",
    "If angle ACD = 40°, then the degree of angle BAD is ( ).",
    "In triangle ABC, angle A = 60°, angle B = 50°, find angle C. Choices: A: 70° B: 60° C: 50° D: 80°",
    "The line AB is parallel to CD, and the angle 1 = 35.0, then the angle 2 is equal to 145°.",
    "Given the length of side BC is 6 and the height is 4, the area of the triangle is 12.",
    "The radius of the circle is 5, so the perimeter is 10 pi and the area is 25 pi.",
    "Let me think step by step. The answer is 140°.",
    "Please think step by step and put your final answer in \\boxed{}.",
    (
        "<think>The dog is in the lower left corner of the image.</think>"
        '<answer>[{"bbox_2d": [12, 345, 678, 901], "label": "dog"}]</answer>'
    ),
    "<think>I see three red apples and two green apples, 3 + 2 = 5.</think><answer>5</answer>",
    "<think>The angle at the center is twice the angle at the circumference.</think><answer>80°</answer>",
    "<answer>[100, 200, 300, 400]</answer> <answer>(123,456),(789,1000)</answer>",
    '{"bbox_2d": [0.5, 10.25, 99.75, 1000.0], "label": "person"}',
    "Describe this image. What is the color of the car? Where is the cat? Which one is bigger?",
    "the a an of in on at to for with and or is are was were be this that these those it its",
    "left right top bottom upper lower middle center front back near far above below between behind",
    "person man woman boy girl child dog cat bird horse car bus truck bike chair table cup bottle plate",
    "red green blue yellow white black brown orange pink gray purple small large big tall short",
    "point line segment angle triangle circle square rectangle polygon radius diameter chord tangent",
    "degree degrees parallel perpendicular equal length width height area perimeter sum product",
    "zero one two three four five six seven eight nine ten eleven twelve hundred thousand",
    "0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 25 30 40 50 60 70 80 90 100 1000",
    "( ) [ ] { } < > , . : ; ? ! = + - * / ' \" ° % # & _ |",
)


def tiny_corpus() -> list[str]:
    """The fixed training text: the lines above, plus coordinate lists made by a fixed rule."""
    lines = list(_CORPUS_LINES)
    lines += ["system\nuser\nassistant\n"] * 8  # role names open every turn of the chat template
    for i in range(64):
        x1, y1 = (37 * i) % 500, (53 * i + 11) % 500
        x2, y2 = x1 + (29 * i) % 400 + 10, y1 + (41 * i) % 400 + 10
        lines.append(f"[{x1}, {y1}, {x2}, {y2}] ({x1},{y1}),({x2},{y2}) {x1 / 7:.2f} {i}")
    return lines


def _train_bpe(corpus: list[str], bpe_vocab_size: int) -> Tokenizer:
    tok = Tokenizer(BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    # The Qwen2 pipeline, so transformers' Qwen2Tokenizer (which rebuilds it from vocab + merges)
    # tokenizes exactly as this tokenizer.json does.
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = BpeTrainer(
        vocab_size=bpe_vocab_size,
        min_frequency=1,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    return tok


def build_tiny_tokenizer(
    out_dir: str | os.PathLike,
    min_pixels: int = 56 * 56,
    max_pixels: int = 28 * 28 * 1280,
    processor_class: str = "Qwen2VLProcessor",
) -> dict[str, int]:
    """Write a tiny Qwen2-VL tokenizer/processor checkpoint into ``out_dir``.

    Files: ``tokenizer.json``, ``tokenizer_config.json`` and ``chat_template.json`` (Qwen2-VL-Instruct
    chat template), ``preprocessor_config.json`` (published layout with ``min_pixels`` /
    ``max_pixels``; ``processor_class`` e.g. ``"Qwen2_5_VLProcessor"`` for a Qwen2.5-VL checkpoint).

    Returns the ids a model config needs::

        {"vocab_size", "image_token_id", "video_token_id", "vision_start_token_id",
         "vision_end_token_id", "vision_token_id", "eos_token_id" (<|im_end|>),
         "pad_token_id" (<|endoftext|>), "bos_token_id" (<|endoftext|>, as Qwen's config.json)}
    """
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    tok = _train_bpe(tiny_corpus(), TINY_BPE_VOCAB_SIZE)
    trained = tok.get_vocab_size(with_added_tokens=True)
    if trained != TINY_BPE_VOCAB_SIZE:
        raise RuntimeError(f"the tiny corpus gave a BPE vocabulary of {trained}, expected {TINY_BPE_VOCAB_SIZE}")
    tok.add_special_tokens(
        [AddedToken(t, special=True, normalized=False, lstrip=False, rstrip=False) for t in QWEN_SPECIAL_TOKENS]
    )
    ids = {t: tok.token_to_id(t) for t in QWEN_SPECIAL_TOKENS}
    expected = {t: TINY_BPE_VOCAB_SIZE + i for i, t in enumerate(QWEN_SPECIAL_TOKENS)}
    if ids != expected:
        raise RuntimeError(f"special token ids {ids} differ from the intended layout {expected}")
    tok.save(os.path.join(out_dir, "tokenizer.json"))

    tokenizer_config: dict[str, Any] = {
        "add_prefix_space": False,
        "added_tokens_decoder": {
            str(i): {
                "content": t,
                "lstrip": False,
                "normalized": False,
                "rstrip": False,
                "single_word": False,
                "special": True,
            }
            for t, i in ids.items()
        },
        "additional_special_tokens": list(QWEN_SPECIAL_TOKENS[1:]),
        "bos_token": None,
        "chat_template": QWEN2_VL_CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": 32768,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }
    preprocessor_config = {
        "min_pixels": int(min_pixels),
        "max_pixels": int(max_pixels),
        "patch_size": 14,
        "temporal_patch_size": 2,
        "merge_size": 2,
        "image_mean": list(OPENAI_CLIP_MEAN),
        "image_std": list(OPENAI_CLIP_STD),
        "image_processor_type": "Qwen2VLImageProcessor",
        "processor_class": processor_class,
    }
    _write_json(os.path.join(out_dir, "tokenizer_config.json"), tokenizer_config)
    _write_json(os.path.join(out_dir, "chat_template.json"), {"chat_template": QWEN2_VL_CHAT_TEMPLATE})
    _write_json(os.path.join(out_dir, "preprocessor_config.json"), preprocessor_config)

    return {
        "vocab_size": tok.get_vocab_size(with_added_tokens=True),
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
        "vision_token_id": ids["<|vision_pad|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
        "bos_token_id": ids["<|endoftext|>"],
    }


def _write_json(file: str, data: dict[str, Any]) -> None:
    with open(file, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, ensure_ascii=False)
        f.write("\n")
