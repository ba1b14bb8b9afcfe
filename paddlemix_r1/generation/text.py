"""Chat generation from text-only prompts: conversations in, decoded answers out.

A thin layer over ``generate``: the checkpoint's chat template renders each conversation
(``TextProcessor``), prompts are left-padded into batches of ``batch_size``, each prompt gets
``num_samples`` completions (one prefill, group prefix sharing), rows stop at the tokenizer's eos, and
the answers are decoded without special tokens. The reasoner reward, the RACRO pipeline and the demo
use it for the frozen text reasoner.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from paddlemix_r1.generation.engine import generate
from paddlemix_r1.models.decoder import CausalLMBase
from paddlemix_r1.processing.processor import Processor, TextProcessor

Conversation = Sequence[dict[str, Any]]


@dataclass(frozen=True)
class SamplingSettings:
    """How answers are drawn. ``do_sample=False``: greedy (temperature, top_p, top_k unused)."""

    max_new_tokens: int = 256
    do_sample: bool = True
    temperature: float = 1.0
    top_p: float | None = None
    top_k: int | None = None
    num_samples: int = 1

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1 or self.num_samples < 1:
            raise ValueError(f"max_new_tokens and num_samples must be >= 1, got {self.max_new_tokens}, "
                             f"{self.num_samples}")
        if self.do_sample and not self.temperature > 0:
            raise ValueError(f"temperature must be > 0 when sampling, got {self.temperature}")


def generate_chat(model: CausalLMBase, processor: TextProcessor | Processor, conversations: Sequence[Conversation],
                  settings: SamplingSettings, batch_size: int = 16, seed: int | None = None,
                  images: Sequence[Sequence[Any]] | None = None) -> list[list[str]]:
    """``settings.num_samples`` answers per conversation, in order: ``out[i][k]`` is sample k of conversation i.

    ``images`` (one list per conversation) only with a vision-language ``Processor``. Batches are drawn with
    ``seed + batch index`` so a run is reproducible whatever the batch size of the caller's next run."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    eos, pad = processor.eos_token_id, processor.pad_token_id
    if eos is None:
        raise ValueError(f"{processor.tokenizer.source}: the tokenizer names no eos token; generation cannot stop")
    pad = eos if pad is None else pad  # finished rows are masked out; any id pads them (transformers does the same)
    out: list[list[str]] = []
    n = settings.num_samples
    for b, start in enumerate(range(0, len(conversations), batch_size)):
        chunk = list(conversations[start:start + batch_size])
        chunk_images = None if images is None else list(images[start:start + batch_size])
        batch = processor(chunk, chunk_images) if chunk_images is not None else processor(chunk)
        result = generate(model, batch, max_new_tokens=settings.max_new_tokens, do_sample=settings.do_sample,
                          temperature=settings.temperature, top_p=settings.top_p, top_k=settings.top_k,
                          num_return_sequences=n, eos_token_id=eos, pad_token_id=pad,
                          seed=None if seed is None else seed + b)
        texts = processor.batch_decode(result.completion_ids.numpy().tolist(), skip_special_tokens=True)  # (B*n,)
        out.extend(texts[i * n:(i + 1) * n] for i in range(len(chunk)))
    return out
