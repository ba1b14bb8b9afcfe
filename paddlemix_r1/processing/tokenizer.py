"""Tokenizer and chat template read from a checkpoint directory.

Built on the ``tokenizers`` library directly (``tokenizer.json``) and ``jinja2`` for the chat
template, with the rendering semantics of transformers' ``apply_chat_template``: a sandboxed
environment with ``trim_blocks`` / ``lstrip_blocks``, ``raise_exception``, ``tojson`` and
``strftime_now``, the special tokens and ``add_generation_prompt`` passed to the template.
``benchmarks/tokenizer.py`` measures this against the alternatives.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import jinja2
import jinja2.ext
import jinja2.sandbox
import numpy as np
import tokenizers

Message = dict[str, Any]

SPECIAL_TOKEN_KEYS = ("bos_token", "eos_token", "pad_token", "unk_token")


def _read_json(file: str) -> dict[str, Any]:
    with open(file, encoding="utf-8") as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{file} is not valid JSON: {e}") from e


def _token_content(value: Any, field: str, source: str) -> str | None:
    """A special token entry is a string, null, or a serialized AddedToken ``{"content": ...}``."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    raise ValueError(f"{source}: field {field!r} must be a string, null or {{'content': ...}}, got {value!r}")


def _token_from_model_config(path: str, backend: tokenizers.Tokenizer, field: str) -> str | None:
    """The token whose id ``generation_config.json`` (else ``config.json``) gives in ``field``
    ("eos_token_id", "pad_token_id"), for checkpoints whose tokenizer files do not name it; None if neither
    does. A list of ids (generation configs may list several eos ids) gives its first."""
    for name in ("generation_config.json", "config.json"):
        file = os.path.join(path, name)
        if not os.path.isfile(file):
            continue
        value = _read_json(file).get(field)
        if isinstance(value, list):
            value = value[0] if value else None
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{file}: {field} must be an integer or a list of integers, got {value!r}")
        token = backend.id_to_token(value)
        if token is None:
            raise ValueError(f"{file}: {field} {value} is not in the vocabulary of tokenizer.json")
        return token
    return None


def read_chat_template(path: str, tokenizer_config: dict[str, Any] | None = None) -> tuple[str | None, str | None]:
    """Find the chat template of a checkpoint: ``(template text, file it came from)``.

    Looked up in the order transformers' processors use: ``chat_template.jinja``, then
    ``chat_template.json`` (key ``chat_template``), then ``tokenizer_config.json``'s
    ``chat_template`` (a string, or a list of named templates of which ``default`` is taken).
    Returns ``(None, None)`` when the checkpoint has none.
    """
    jinja_file = os.path.join(path, "chat_template.jinja")
    if os.path.isfile(jinja_file):
        with open(jinja_file, encoding="utf-8") as f:
            return f.read(), jinja_file
    json_file = os.path.join(path, "chat_template.json")
    if os.path.isfile(json_file):
        template = _read_json(json_file).get("chat_template")
        if not isinstance(template, str):
            raise TypeError(f"{json_file}: 'chat_template' must be a string, got {type(template).__name__}")
        return template, json_file
    config_file = os.path.join(path, "tokenizer_config.json")
    template = (tokenizer_config or {}).get("chat_template")
    if template is None:
        return None, None
    if isinstance(template, list):
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        if "default" not in named:
            raise ValueError(f"{config_file}: 'chat_template' is a list without a 'default' entry: {list(named)}")
        template = named["default"]
    if not isinstance(template, str):
        raise TypeError(f"{config_file}: 'chat_template' must be a string, got {type(template).__name__}")
    return template, config_file


def compile_chat_template(template: str) -> jinja2.Template:
    """Compile a chat template the way transformers does (sandboxed, trim/lstrip blocks)."""

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(
        x: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None, sort_keys: bool = False
    ) -> str:
        # Jinja's own tojson escapes HTML characters; chat templates expect plain JSON.
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(fmt: str) -> str:
        return datetime.now().strftime(fmt)

    env = jinja2.sandbox.ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env.from_string(template)


class Tokenizer:
    """A checkpoint's tokenizer: ``tokenizers.Tokenizer`` + special tokens + chat template.

    ``encode`` never adds special tokens of its own: a prompt rendered by the chat template
    already carries them (transformers' ``apply_chat_template(tokenize=True)`` does the same).
    """

    def __init__(
        self,
        backend: tokenizers.Tokenizer,
        special_tokens: dict[str, str | None] | None = None,
        chat_template: str | None = None,
        source: str = "<in memory>",
    ) -> None:
        self.backend = backend
        self.source = source
        self.chat_template = chat_template
        self._compiled_template: jinja2.Template | None = None
        special_tokens = special_tokens or {}
        self.bos_token: str | None = special_tokens.get("bos_token")
        self.eos_token: str | None = special_tokens.get("eos_token")
        self.pad_token: str | None = special_tokens.get("pad_token")
        self.unk_token: str | None = special_tokens.get("unk_token")
        for key in SPECIAL_TOKEN_KEYS:
            token = special_tokens.get(key)
            if token is not None and backend.token_to_id(token) is None:
                raise ValueError(f"{source}: {key} {token!r} is not in the vocabulary of tokenizer.json")

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> Tokenizer:
        """Load ``tokenizer.json``, ``tokenizer_config.json`` and the chat template from ``path``."""
        path = os.fspath(path)
        tokenizer_file = os.path.join(path, "tokenizer.json")
        if not os.path.isfile(tokenizer_file):
            raise FileNotFoundError(f"no tokenizer.json in {path}")
        backend = tokenizers.Tokenizer.from_file(tokenizer_file)
        config_file = os.path.join(path, "tokenizer_config.json")
        config = _read_json(config_file) if os.path.isfile(config_file) else {}
        map_file = os.path.join(path, "special_tokens_map.json")
        token_map = _read_json(map_file) if os.path.isfile(map_file) else {}
        special_tokens: dict[str, str | None] = {}
        for key in SPECIAL_TOKEN_KEYS:
            # tokenizer_config.json is the newer home of these fields; special_tokens_map.json the older one
            if key in config:
                special_tokens[key] = _token_content(config[key], key, config_file)
            elif key in token_map:
                special_tokens[key] = _token_content(token_map[key], key, map_file)
        for key in ("eos_token", "pad_token"):
            if special_tokens.get(key) is None:
                special_tokens[key] = _token_from_model_config(path, backend, f"{key}_id")
        if special_tokens["eos_token"] is None:
            # generation cannot stop without it (and used to fail much later, with a bare TypeError)
            missing = [f for f in ("tokenizer_config.json", "special_tokens_map.json", "generation_config.json",
                                   "config.json") if not os.path.isfile(os.path.join(path, f))]
            raise ValueError(
                f"{path}: no eos token: none of tokenizer_config.json ('eos_token'), special_tokens_map.json, "
                f"generation_config.json or config.json ('eos_token_id') names one"
                + (f" (missing: {', '.join(missing)})" if missing else ""))
        template, _ = read_chat_template(path, config)
        return cls(backend, special_tokens, template, source=path)

    # ---- vocabulary -------------------------------------------------------------------------

    def __len__(self) -> int:
        """Vocabulary size including added (special) tokens."""
        return self.backend.get_vocab_size(with_added_tokens=True)

    def token_to_id(self, token: str) -> int:
        token_id = self.backend.token_to_id(token)
        if token_id is None:
            raise KeyError(f"token {token!r} is not in the vocabulary of {self.source}")
        return token_id

    def convert_tokens_to_ids(self, tokens: str | Sequence[str]) -> int | list[int]:
        if isinstance(tokens, str):
            return self.token_to_id(tokens)
        return [self.token_to_id(t) for t in tokens]

    def _id_of(self, token: str | None) -> int | None:
        return None if token is None else self.token_to_id(token)

    @property
    def eos_token_id(self) -> int | None:
        return self._id_of(self.eos_token)

    @property
    def pad_token_id(self) -> int | None:
        return self._id_of(self.pad_token)

    @property
    def bos_token_id(self) -> int | None:
        return self._id_of(self.bos_token)

    @property
    def unk_token_id(self) -> int | None:
        return self._id_of(self.unk_token)

    @property
    def all_special_ids(self) -> list[int]:
        """Ids of the added tokens flagged special (those ``skip_special_tokens`` drops)."""
        return sorted(i for i, t in self.backend.get_added_tokens_decoder().items() if t.special)

    # ---- text <-> ids -----------------------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        return self.backend.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self.backend.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Any, skip_special_tokens: bool = False) -> str:
        """Decode one sequence of ids (list, numpy array or paddle tensor, 1-D)."""
        ids = np.asarray(ids)
        if ids.ndim != 1:
            raise ValueError(f"decode expects a 1-D sequence of ids, got shape {ids.shape}; use batch_decode")
        return self.backend.decode(ids.tolist(), skip_special_tokens=skip_special_tokens)

    def batch_decode(self, ids: Any, skip_special_tokens: bool = False) -> list[str]:
        """Decode a batch: a 2-D array / tensor, or a list of id lists of any lengths."""
        if isinstance(ids, (list, tuple)):
            rows = [np.asarray(row).tolist() for row in ids]
        else:
            array = np.asarray(ids)
            if array.ndim != 2:
                raise ValueError(f"batch_decode expects 2-D ids, got shape {array.shape}")
            rows = array.tolist()
        return self.backend.decode_batch(rows, skip_special_tokens=skip_special_tokens)

    # ---- chat template ----------------------------------------------------------------------

    def apply_chat_template(
        self,
        conversation: Sequence[Message],
        add_generation_prompt: bool = False,
        **template_kwargs: Any,
    ) -> str:
        """Render one conversation (a list of ``{"role", "content"}`` messages) to text.

        ``content`` is a string or a list of parts such as ``{"type": "image"}`` and
        ``{"type": "text", "text": ...}``. Extra keyword arguments (e.g. ``add_vision_id``) are
        passed to the template, as are ``bos_token``, ``eos_token``, ``pad_token``, ``unk_token``.
        """
        if self.chat_template is None:
            raise ValueError(
                f"{self.source} has no chat template (looked for chat_template.jinja, chat_template.json "
                "and 'chat_template' in tokenizer_config.json)"
            )
        if self._compiled_template is None:
            self._compiled_template = compile_chat_template(self.chat_template)
        for i, message in enumerate(conversation):
            if not isinstance(message, dict) or "role" not in message:
                raise TypeError(f"message {i} must be a dict with a 'role', got {message!r}")
        specials = {key: getattr(self, key) for key in SPECIAL_TOKEN_KEYS}
        return self._compiled_template.render(
            messages=list(conversation),
            tools=None,
            documents=None,
            add_generation_prompt=add_generation_prompt,
            **{**specials, **template_kwargs},
        )
