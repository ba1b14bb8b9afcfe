"""Settings of ``paddlemix-r1 serve`` (one dataclass; the CLI flags carry the same names)."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass
class ServeConfig:
    """What the server loads, where it listens, how it batches and what input it accepts."""

    model_path: str
    """Checkpoint directory (config.json, safetensors, tokenizer and processor files)."""
    served_model_name: str | None = None
    """The id in ``GET /v1/models`` and the only ``model`` a request may name (default: the
    directory's base name). A request without ``model`` gets this one."""
    host: str = "127.0.0.1"
    """Bind address. The default keeps the server private to this machine."""
    port: int = 8000
    dtype: str = "float32"
    """Weights dtype (fp32 on CPU: Paddle's CPU build has no bf16 matmul)."""
    max_batch_size: int = 8
    """Completion rows (prompts x n) decoded together in one generate call. A request's ``n`` may
    not exceed it."""
    batch_window_ms: float = 5.0
    """How long the worker waits after the first queued request for others to join its batch.
    Requests that queued while a batch was running join the next one without waiting."""
    max_new_tokens: int = 256
    """Completion length for requests that give neither ``max_tokens`` nor ``max_completion_tokens``
    (then also capped by the room left in the context)."""
    max_model_len: int | None = None
    """Prompt + completion tokens a request may use (default: ``max_position_embeddings`` of the
    checkpoint). Longer prompts are a 400 ``context_length_exceeded``."""
    max_images: int = 4
    """Images per request; more is a 400."""
    allowed_root: str | None = None
    """Folder local image paths must lie in (after resolving symlinks). None: local paths refused."""
    api_key: str | None = None
    """When set, every ``/v1`` request needs ``Authorization: Bearer <api_key>`` (else 401)."""
    max_request_bytes: int = 32 << 20
    """Largest request body (base64 images included); larger is a 413."""
    max_pending: int = 256
    """Requests queued for the model at most; beyond it new requests get a 503 until the queue drains."""

    def __post_init__(self) -> None:
        if self.served_model_name is None:
            self.served_model_name = os.path.basename(os.path.normpath(self.model_path))
        if self.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {self.max_batch_size}")
        if self.batch_window_ms < 0:
            raise ValueError(f"batch_window_ms must be >= 0, got {self.batch_window_ms}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.max_images < 0:
            raise ValueError(f"max_images must be >= 0, got {self.max_images}")
        if self.allowed_root is not None and not os.path.isdir(self.allowed_root):
            raise ValueError(f"allowed_root is not a directory: {self.allowed_root}")
