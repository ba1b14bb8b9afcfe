"""Conversations + images -> one padded model batch (Qwen2-VL / Qwen2.5-VL).

The chat template renders one ``<|vision_start|><|image_pad|><|vision_end|>`` per image; the
rendered text is tokenized with that single ``<|image_pad|>`` and each one is then expanded to
``t * grid_h * grid_w // merge_size**2`` copies at the id level. ``<|image_pad|>`` is a special
token, so this gives exactly the ids of tokenizing the expanded text (what transformers'
processor does) without tokenizing thousands of placeholder strings.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from typing import Any

import numpy as np

from paddlemix_r1.processing.image_processor import ImageInput, ImageProcessor
from paddlemix_r1.processing.tokenizer import Message, Tokenizer

IMAGE_TOKEN = "<|image_pad|>"
VIDEO_TOKEN = "<|video_pad|>"
VISION_START_TOKEN = "<|vision_start|>"
VISION_END_TOKEN = "<|vision_end|>"

# Files a checkpoint's processor is made of; save_pretrained copies the ones present.
PROCESSOR_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "chat_template.json",
    "chat_template.jinja",
    "preprocessor_config.json",
)


class _ChatTokenizer:
    """What both processors take from their ``tokenizer``: special ids, decoding, the chat template."""

    tokenizer: Tokenizer

    @property
    def eos_token_id(self) -> int | None:
        return self.tokenizer.eos_token_id

    @property
    def pad_token_id(self) -> int | None:
        return self.tokenizer.pad_token_id

    def decode(self, ids: Any, skip_special_tokens: bool = False) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

    def batch_decode(self, ids: Any, skip_special_tokens: bool = False) -> list[str]:
        return self.tokenizer.batch_decode(ids, skip_special_tokens=skip_special_tokens)

    def apply_chat_template(
        self, conversation: Sequence[Message], add_generation_prompt: bool = True, **kwargs: Any
    ) -> str:
        """Render one conversation; each image part becomes one ``<|image_pad|>`` placeholder."""
        return self.tokenizer.apply_chat_template(conversation, add_generation_prompt=add_generation_prompt, **kwargs)


class Processor(_ChatTokenizer):
    """Tokenizer + chat template + image processor of a Qwen2-VL / Qwen2.5-VL checkpoint.

    ``proc(conversations, images)`` returns::

        input_ids       int64   [B, L]   left padded by default, pad = tokenizer.pad_token_id
        attention_mask  int64   [B, L]   1 on real tokens
        pixel_values    float32 [N, C*T*P*P]   all images of the batch, conversation order
        image_grid_thw  int64   [num_images, 3]
        (pixel_values / image_grid_thw are None when the batch has no image)

    as paddle tensors (``return_tensors="pd"``) or numpy arrays (``"np"``). With
    ``return_sizes=True`` two plain-Python entries are added, one list per conversation:
    ``original_sizes`` (each image's (width, height) after EXIF orientation) and
    ``resized_sizes`` (the (width, height) the model sees); box conversions need both.
    """

    def __init__(self, tokenizer: Tokenizer, image_processor: ImageProcessor, source: str | None = None) -> None:
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.source = source
        self.image_token = IMAGE_TOKEN
        self.video_token = VIDEO_TOKEN
        self.image_token_id = tokenizer.token_to_id(IMAGE_TOKEN)
        self.video_token_id = tokenizer.token_to_id(VIDEO_TOKEN)
        self.vision_start_token_id = tokenizer.token_to_id(VISION_START_TOKEN)
        self.vision_end_token_id = tokenizer.token_to_id(VISION_END_TOKEN)

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike, min_pixels: int | None = None, max_pixels: int | None = None
    ) -> Processor:
        """Load from a checkpoint directory (tokenizer files, chat template, preprocessor_config.json).

        ``min_pixels`` / ``max_pixels``, when given, replace the checkpoint's image size limits
        (the ``--min_pixels`` / ``--max_pixels`` of the training recipes).
        """
        path = os.fspath(path)
        if not os.path.isdir(path):
            raise FileNotFoundError(f"processor checkpoint directory not found: {path}")
        image_processor = ImageProcessor.from_pretrained(path)
        if min_pixels is not None or max_pixels is not None:
            config = image_processor.to_config()
            config["min_pixels"] = min_pixels if min_pixels is not None else image_processor.min_pixels
            config["max_pixels"] = max_pixels if max_pixels is not None else image_processor.max_pixels
            image_processor = ImageProcessor.from_config(config, source=f"{path} with pixel limits overridden")
        return cls(Tokenizer.from_pretrained(path), image_processor, source=path)

    def save_pretrained(self, out_dir: str | os.PathLike) -> None:
        """Write the processor files into ``out_dir``: the tokenizer and chat template files copied
        from the checkpoint this was loaded from, and preprocessor_config.json with the current
        image settings (published layout; other fields of the source file are kept)."""
        if self.source is None:
            raise ValueError("this Processor was not loaded from a directory; nothing to copy")
        out_dir = os.fspath(out_dir)
        os.makedirs(out_dir, exist_ok=True)
        for name in PROCESSOR_FILES:
            src = os.path.join(self.source, name)
            if name == "preprocessor_config.json" or not os.path.isfile(src):
                continue
            if os.path.abspath(src) != os.path.abspath(os.path.join(out_dir, name)):
                shutil.copyfile(src, os.path.join(out_dir, name))
        source_config = os.path.join(self.source, "preprocessor_config.json")
        config: dict[str, Any] = {}
        if os.path.isfile(source_config):
            with open(source_config, encoding="utf-8") as f:
                config = json.load(f)
        config.update(self.image_processor.to_config())
        if "size" in config:
            config["size"] = {
                "shortest_edge": self.image_processor.min_pixels,
                "longest_edge": self.image_processor.max_pixels,
            }
        with open(os.path.join(out_dir, "preprocessor_config.json"), "w", encoding="utf-8") as f:
            json.dump(config, f, indent=2)
            f.write("\n")

    # ---- special ids and text ---------------------------------------------------------------

    @property
    def merge_size(self) -> int:
        return self.image_processor.merge_size

    # ---- the batch --------------------------------------------------------------------------

    def __call__(
        self,
        conversations: Sequence[Sequence[Message] | str],
        images: Sequence[Sequence[ImageInput] | None] | None = None,
        add_generation_prompt: bool = True,
        padding_side: str = "left",
        max_length: int | None = None,
        return_sizes: bool = False,
        return_tensors: str = "pd",
        **template_kwargs: Any,
    ) -> dict[str, Any]:
        """Build a batch from B conversations and their images.

        conversations: B items, each a list of HF chat messages (rendered with the chat template)
            or an already rendered prompt string containing ``<|image_pad|>`` placeholders.
        images: B items, each the list of that conversation's images (paths or PIL images) in
            placeholder order, or None / [] for a text-only conversation; None for all text-only.
        max_length: a prompt longer than this (image tokens included) is a ValueError naming the
            sample. Prompts are never cut: cutting through image tokens breaks the model input.
        """
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        if return_tensors not in ("pd", "np"):
            raise ValueError(f"return_tensors must be 'pd' or 'np', got {return_tensors!r}")
        if isinstance(conversations, str) or not isinstance(conversations, Sequence):
            raise TypeError("conversations must be a list of conversations (each a list of messages or a string)")
        if len(conversations) == 0:
            raise ValueError("conversations is empty")
        if isinstance(conversations[0], dict):
            raise TypeError(
                "conversations must be a list of conversations; got a single list of messages, wrap it in [...]"
            )
        batch_size = len(conversations)
        per_sample_images = self._per_sample_images(images, batch_size)

        texts = [
            c if isinstance(c, str) else self.apply_chat_template(c, add_generation_prompt, **template_kwargs)
            for c in conversations
        ]
        token_ids = [np.asarray(ids, dtype=np.int64) for ids in self.tokenizer.encode_batch(texts)]  # B x (l_i,)

        for i, ids in enumerate(token_ids):
            n_videos = int(np.sum(ids == self.video_token_id))
            if n_videos:
                raise ValueError(
                    f"conversation {i}: has {n_videos} {self.video_token} placeholder(s); videos are not supported"
                )
            n_placeholders = int(np.sum(ids == self.image_token_id))
            if n_placeholders != len(per_sample_images[i]):
                raise ValueError(
                    f"conversation {i}: the prompt has {n_placeholders} image placeholder(s) ({self.image_token}) "
                    f"but {len(per_sample_images[i])} image(s) were given for it"
                )

        flat_images = [image for sample in per_sample_images for image in sample]
        image_batch = self.image_processor(flat_images) if flat_images else None
        merge_area = self.merge_size**2
        tokens_per_image = (
            (np.prod(image_batch.image_grid_thw, axis=1) // merge_area).tolist() if image_batch is not None else []
        )  # (num_images,)

        expanded: list[np.ndarray] = []
        next_image = 0
        for i, ids in enumerate(token_ids):
            is_image = ids == self.image_token_id  # (l_i,)
            n = int(is_image.sum())
            repeats = np.ones_like(ids)
            repeats[is_image] = tokens_per_image[next_image : next_image + n]
            next_image += n
            expanded.append(np.repeat(ids, repeats))  # (L_i,)

        lengths = [len(ids) for ids in expanded]
        if max_length is not None:
            for i, length in enumerate(lengths):
                if length > max_length:
                    n_image_tokens = int(np.sum(expanded[i] == self.image_token_id))
                    raise ValueError(
                        f"conversation {i}: the prompt is {length} tokens ({n_image_tokens} of them image tokens), "
                        f"longer than max_length={max_length}; prompts are not truncated, shorten the text or "
                        "lower the image processor's max_pixels"
                    )

        input_ids, attention_mask = pad_prompts(expanded, self.pad_token_id, padding_side, self.tokenizer.source)

        arrays: dict[str, np.ndarray | None] = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "pixel_values": image_batch.pixel_values if image_batch is not None else None,  # (N, C*T*P*P)
            "image_grid_thw": image_batch.image_grid_thw if image_batch is not None else None,  # (num_images, 3)
        }
        batch: dict[str, Any] = arrays if return_tensors == "np" else _to_paddle(arrays)
        if return_sizes:
            batch["original_sizes"], batch["resized_sizes"] = self._sizes_per_sample(per_sample_images, image_batch)
        return batch

    @staticmethod
    def _per_sample_images(images: Any, batch_size: int) -> list[list[ImageInput]]:
        if images is None:
            return [[] for _ in range(batch_size)]
        if isinstance(images, (str, os.PathLike)) or not isinstance(images, Sequence):
            raise TypeError("images must be a list with one list of images per conversation")
        if len(images) != batch_size:
            raise ValueError(
                f"got {batch_size} conversations but {len(images)} image lists; give one list per conversation"
            )
        out = []
        for i, sample in enumerate(images):
            if sample is None:
                out.append([])
            elif isinstance(sample, (list, tuple)):
                out.append(list(sample))
            else:
                raise TypeError(
                    f"images[{i}] must be a list of images (or None), got {type(sample).__name__}; "
                    "wrap a single image in [...]"
                )
        return out

    @staticmethod
    def _sizes_per_sample(per_sample_images: list[list[ImageInput]], image_batch: Any) -> tuple[list, list]:
        original, resized, k = [], [], 0
        for sample in per_sample_images:
            n = len(sample)
            original.append(image_batch.original_sizes[k : k + n] if n else [])
            resized.append(image_batch.resized_sizes[k : k + n] if n else [])
            k += n
        return original, resized


def _to_paddle(arrays: dict[str, np.ndarray | None]) -> dict[str, Any]:
    # Imported here, not at module level: tokenization and image processing (and
    # return_tensors="np") do not depend on paddle.
    import paddle

    return {k: None if v is None else paddle.to_tensor(v) for k, v in arrays.items()}


def pad_prompts(sequences: Sequence[Sequence[int]], pad_id: int | None, padding_side: str,
                source: str | None) -> tuple[np.ndarray, np.ndarray]:
    """B token-id sequences -> (input_ids, attention_mask), each (B, L), padded on ``padding_side``."""
    lengths = [len(ids) for ids in sequences]
    longest = max(lengths)
    if pad_id is None and min(lengths) != longest:
        raise ValueError(f"{source} defines no pad_token, needed to pad prompts of different lengths")
    input_ids = np.full((len(sequences), longest), pad_id if pad_id is not None else 0, dtype=np.int64)  # (B, L)
    attention_mask = np.zeros((len(sequences), longest), dtype=np.int64)  # (B, L)
    for i, ids in enumerate(sequences):
        span = slice(longest - len(ids), longest) if padding_side == "left" else slice(0, len(ids))
        input_ids[i, span] = ids
        attention_mask[i, span] = 1
    return input_ids, attention_mask


class TextProcessor(_ChatTokenizer):
    """Tokenizer + chat template of a text-only checkpoint (a Qwen2 causal LM: no ``preprocessor_config.json``),
    with the batch interface of ``Processor`` so generation and SFT drive both kinds alike.

    ``proc(conversations)`` returns input_ids / attention_mask [B, L], left padded by default (pad =
    tokenizer.pad_token_id), as paddle tensors or numpy arrays; ``images`` must be None or empty per row.
    """

    def __init__(self, tokenizer: Tokenizer, source: str | None = None) -> None:
        self.tokenizer = tokenizer
        self.source = source

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> TextProcessor:
        path = os.fspath(path)
        if not os.path.isdir(path):
            raise FileNotFoundError(f"processor checkpoint directory not found: {path}")
        return cls(Tokenizer.from_pretrained(path), source=path)

    def save_pretrained(self, out_dir: str | os.PathLike) -> None:
        """Copy the tokenizer and chat template files of the checkpoint this was loaded from into ``out_dir``."""
        if self.source is None:
            raise ValueError("this TextProcessor was not loaded from a directory; nothing to copy")
        os.makedirs(out_dir, exist_ok=True)
        for name in PROCESSOR_FILES:
            src = os.path.join(self.source, name)
            if os.path.isfile(src) and os.path.abspath(src) != os.path.abspath(os.path.join(out_dir, name)):
                shutil.copyfile(src, os.path.join(out_dir, name))


    def __call__(
        self,
        conversations: Sequence[Sequence[Message] | str],
        images: Sequence[Sequence[Any] | None] | None = None,
        add_generation_prompt: bool = True,
        padding_side: str = "left",
        max_length: int | None = None,
        return_tensors: str = "pd",
        **template_kwargs: Any,
    ) -> dict[str, Any]:
        """Render (chat template) and tokenize B conversations, or take already rendered prompt strings."""
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        if return_tensors not in ("pd", "np"):
            raise ValueError(f"return_tensors must be 'pd' or 'np', got {return_tensors!r}")
        if isinstance(conversations, str) or not isinstance(conversations, Sequence) or not conversations:
            raise TypeError("conversations must be a non-empty list of conversations (message lists or strings)")
        for i, sample in enumerate(images or []):
            if sample:
                raise ValueError(f"conversation {i}: {len(sample)} image(s) given to a text-only model's processor")
        texts = [
            c if isinstance(c, str) else self.apply_chat_template(c, add_generation_prompt, **template_kwargs)
            for c in conversations
        ]
        token_ids = self.tokenizer.encode_batch(texts)  # B x (l_i,)
        lengths = [len(ids) for ids in token_ids]
        if max_length is not None and max(lengths) > max_length:
            i = lengths.index(max(lengths))
            raise ValueError(f"conversation {i}: the prompt is {lengths[i]} tokens, longer than max_length={max_length}; "
                             "prompts are not truncated")
        input_ids, attention_mask = pad_prompts(token_ids, self.pad_token_id, padding_side, self.tokenizer.source)
        arrays: dict[str, np.ndarray | None] = {"input_ids": input_ids, "attention_mask": attention_mask}
        return arrays if return_tensors == "np" else _to_paddle(arrays)


def load_processor(path: str | os.PathLike, **kwargs: Any) -> Processor | TextProcessor:
    """``Processor`` for a vision-language checkpoint, ``TextProcessor`` for a text-only one (no
    ``preprocessor_config.json``). ``kwargs`` (min_pixels, max_pixels) apply to the former only."""
    if os.path.isfile(os.path.join(os.fspath(path), "preprocessor_config.json")):
        return Processor.from_pretrained(path, **kwargs)
    given = sorted(k for k, v in kwargs.items() if v is not None)
    if given:
        raise ValueError(f"{path} is a text-only checkpoint (no preprocessor_config.json): {given} do not apply")
    return TextProcessor.from_pretrained(path)
