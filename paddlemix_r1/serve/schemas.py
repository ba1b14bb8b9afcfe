"""Request validation and response shapes of ``POST /v1/chat/completions`` (OpenAI's JSON).

Top-level fields fall into four sets, so a client learns at once when the server would not do what
it asked (instead of silently answering something else):

- supported: ``model messages temperature top_p top_k max_tokens max_completion_tokens n seed stop``
  (``top_k`` is vLLM's extension; ``-1`` / ``0`` / null mean no top-k);
- accepted and ignored, because they label or route a request but do not change the answer:
  ``user metadata store service_tier safety_identifier prompt_cache_key parallel_tool_calls``;
- OpenAI parameters this server does not implement: accepted only at their neutral value (``stream:
  false``, ``presence_penalty: 0``, ``logprobs: false``, ``response_format: {"type": "text"}``, ``tools:
  []``, ...), which many tools send by default; any other value is a 400 naming the parameter;
- anything else is a 400 that names the unknown field(s).

Message objects and content parts are strict too (an unknown key is a 400 naming its path).
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class APIError(Exception):
    """An error returned to the client as ``{"error": {message, type, param, code}}`` with ``status``."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


# ---- top-level fields ---------------------------------------------------------------------------

SUPPORTED = ("model", "messages", "temperature", "top_p", "top_k", "max_tokens", "max_completion_tokens", "n",
             "seed", "stop")
IGNORED = ("user", "metadata", "store", "service_tier", "safety_identifier", "prompt_cache_key",
           "parallel_tool_calls")


def _is_none(v: Any) -> bool:
    return v is None


def _none_or(*neutral: Any) -> Callable[[Any], bool]:
    return lambda v: v is None or any(v == n and type(v) is type(n) for n in neutral)


# OpenAI parameter -> "is this value neutral" (the server behaves as OpenAI would with that value).
UNSUPPORTED: dict[str, Callable[[Any], bool]] = {
    "stream": _none_or(False),
    "stream_options": _is_none,
    "logprobs": _none_or(False),
    "top_logprobs": _none_or(0),
    "presence_penalty": _none_or(0, 0.0),
    "frequency_penalty": _none_or(0, 0.0),
    "logit_bias": _none_or({}),
    "response_format": _none_or({"type": "text"}),
    "tools": _none_or([]),
    "tool_choice": _none_or("none"),
    "functions": _none_or([]),
    "function_call": _none_or("none"),
    "modalities": _none_or(["text"]),
    "audio": _is_none,
    "prediction": _is_none,
    "reasoning_effort": _is_none,
    "verbosity": _is_none,
    "web_search_options": _is_none,
}


# ---- the request model --------------------------------------------------------------------------

class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ImageURL(_Strict):
    url: str
    # Accepted for compatibility; the image processor's min/max pixels decide the resolution.
    detail: Literal["auto", "low", "high"] | None = None


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ImagePart(_Strict):
    type: Literal["image_url"]
    image_url: ImageURL


PART_TYPES: dict[str, type[BaseModel]] = {"text": TextPart, "image_url": ImagePart}


class Message(_Strict):
    # "developer" is OpenAI's newer name for the system role; it is rendered as "system".
    role: Literal["system", "developer", "user", "assistant"]
    # A list arrives as dicts; parse_chat_request validates each into a TextPart / ImagePart itself, so that
    # an error names its path (messages.0.content.1.image_url.url) instead of pydantic's union branches.
    content: str | list[Any]
    name: str | None = None  # a participant label; the chat template has no place for it


class ChatRequest(_Strict):
    model: str | None = None
    messages: list[Message] = Field(min_length=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=-1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    n: int | None = Field(None, ge=1)
    seed: int | None = None
    stop: str | list[str] | None = None

    @property
    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    @property
    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


def parse_chat_request(payload: Any) -> ChatRequest:
    """Validate a decoded JSON body; raise ``APIError(400)`` naming the offending field."""
    if not isinstance(payload, dict):
        raise APIError(400, f"the request body must be a JSON object, got {type(payload).__name__}")
    unknown = sorted(k for k in payload if k not in SUPPORTED and k not in IGNORED and k not in UNSUPPORTED)
    if unknown:
        raise APIError(400, f"unknown field(s): {', '.join(unknown)}", param=unknown[0], code="unknown_field")
    for key, neutral in UNSUPPORTED.items():
        if key in payload and not neutral(payload[key]):
            raise APIError(400, f"{key}={payload[key]!r} is not supported by this server (only its default "
                                "value is accepted)", param=key, code="unsupported_parameter")
    fields = {k: v for k, v in payload.items() if k in SUPPORTED}
    req = _validate(ChatRequest, fields, ())
    for i, m in enumerate(req.messages):
        if isinstance(m.content, list):
            m.content = [_content_part(part, ("messages", i, "content", j)) for j, part in enumerate(m.content)]
    stops = req.stop_list
    if len(stops) > 4 or any(not s for s in stops):
        raise APIError(400, "stop: at most 4 non-empty strings", param="stop")
    for i, m in enumerate(req.messages):
        if m.role != "user" and isinstance(m.content, list) and any(p.type == "image_url" for p in m.content):
            raise APIError(400, f"messages.{i}: images are accepted in user messages only", param=f"messages.{i}")
    return req


# Union branch labels pydantic puts into an error's location ("str", "list[any]"): not part of the field path.
_BRANCH_LABEL = re.compile(r"^(str|int|float|bool|none|list|dict)(\[.*\])?$")


def _validate(model: type[BaseModel], data: Any, prefix: tuple) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as e:
        errors = e.errors()
        first = errors[0]
        loc, msg = [], first["msg"]
        for k, p in enumerate(first["loc"]):
            if isinstance(p, str) and _BRANCH_LABEL.match(p):
                # a value that fits no branch of a union: name the accepted types, not the first branch's complaint
                branches = sorted({err["loc"][k] for err in errors if err["loc"][:k] == first["loc"][:k]})
                msg = f"expected {' or '.join(b.split('[')[0] for b in branches)}"
                break
            loc.append(p)
        param = ".".join(str(p) for p in (*prefix, *loc))
        raise APIError(400, f"{param or 'body'}: {msg}", param=param or None) from None


def _content_part(part: Any, where: tuple) -> BaseModel:
    path = ".".join(map(str, where))
    kind = part.get("type") if isinstance(part, dict) else None
    if kind not in PART_TYPES:
        raise APIError(400, f"{path}: a content part must be an object with type 'text' or 'image_url', got "
                            f"{kind if kind is not None else type(part).__name__!r}", param=f"{path}.type")
    return _validate(PART_TYPES[kind], part, where)


# ---- responses ----------------------------------------------------------------------------------

def chat_completion(model: str, choices: list[dict[str, Any]], prompt_tokens: int) -> dict[str, Any]:
    """A ``chat.completion`` object; ``choices`` items: {"text", "finish_reason", "completion_tokens"}."""
    completion_tokens = sum(c["completion_tokens"] for c in choices)
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": None,
        "choices": [
            {"index": i, "message": {"role": "assistant", "content": c["text"]}, "logprobs": None,
             "finish_reason": c["finish_reason"]}
            for i, c in enumerate(choices)
        ],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


def model_card(name: str, created: int) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": created, "owned_by": "paddlemix_r1"}
