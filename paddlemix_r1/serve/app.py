"""The HTTP layer: an OpenAI-compatible chat endpoint over one ``BatchWorker``.

    POST /v1/chat/completions   text + image_url parts (data URLs, or paths under --allowed_root)
    GET  /v1/models             the one served model
    GET  /health                liveness + the worker's counters
    GET  /metrics               the worker's counters (batch sizes: generate calls by requests per call)

Every error is OpenAI's ``{"error": {"message", "type", "param", "code"}}`` with a 4xx (5xx only for
an overloaded queue or a failed generate call); the worker and the server keep running.
Request parsing, image decoding, tokenization and detokenization run in the server's thread pool, so
they overlap with the model thread's work; only ``generate`` runs on the model thread.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections import Counter
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from paddlemix_r1.serve.backend import ChatModel, PreparedPrompt
from paddlemix_r1.serve.config import ServeConfig
from paddlemix_r1.serve.images import load_image_url
from paddlemix_r1.serve.schemas import APIError, ChatRequest, chat_completion, model_card, parse_chat_request
from paddlemix_r1.serve.worker import BatchWorker, Completion, QueueFull, SamplingParams

log = logging.getLogger("paddlemix_r1.serve")

# Text that would be read as the processor's vision placeholders and break the image/token count.
RESERVED_TOKENS = ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")


def create_app(chat_model: ChatModel, config: ServeConfig) -> FastAPI:
    """The FastAPI app; its lifespan starts and stops the model worker."""
    worker = BatchWorker(chat_model, max_batch_size=config.max_batch_size,
                         batch_window_s=config.batch_window_ms / 1000.0, max_pending=config.max_pending)
    errors: Counter[int] = Counter()  # responses by error status
    created = int(time.time())

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        worker.start()
        try:
            yield
        finally:
            await run_in_threadpool(worker.stop)

    app = FastAPI(title="paddlemix-r1", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.worker = worker
    app.state.chat_model = chat_model

    def error_response(e: APIError) -> JSONResponse:
        errors[e.status] += 1
        log.info("%d %s: %s", e.status, e.code or e.type, e.message)
        return JSONResponse(e.body(), status_code=e.status)

    @app.exception_handler(APIError)
    async def _api_error(_: Request, e: APIError) -> JSONResponse:
        return error_response(e)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, e: StarletteHTTPException) -> JSONResponse:  # 404 / 405 of the router
        return error_response(APIError(e.status_code, str(e.detail)))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, e: RequestValidationError) -> JSONResponse:
        return error_response(APIError(400, str(e.errors()[0].get("msg", e))))

    def check_auth(request: Request) -> None:
        if config.api_key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), config.api_key.encode()):
            raise APIError(401, "missing or incorrect API key (send Authorization: Bearer <key>)",
                           code="invalid_api_key")

    def metrics() -> dict[str, Any]:
        return {**worker.metrics(), "errors": {str(k): v for k, v in sorted(errors.items())}}

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": config.served_model_name, "metrics": metrics()}

    @app.get("/metrics")
    async def get_metrics() -> dict[str, Any]:
        return metrics()

    @app.get("/v1/models")
    async def list_models(request: Request) -> dict[str, Any]:
        check_auth(request)
        return {"object": "list", "data": [model_card(config.served_model_name, created)]}

    @app.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str, request: Request) -> dict[str, Any]:
        check_auth(request)
        if model_id != config.served_model_name:
            raise APIError(404, f"model {model_id!r} does not exist; this server serves {config.served_model_name!r}",
                           param="model", code="model_not_found")
        return model_card(model_id, created)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> JSONResponse:
        check_auth(request)
        req = parse_chat_request(await _read_json(request, config.max_request_bytes))
        if req.model is not None and req.model != config.served_model_name:
            raise APIError(404, f"model {req.model!r} does not exist; this server serves {config.served_model_name!r}",
                           param="model", code="model_not_found")
        if (req.n or 1) > config.max_batch_size:
            raise APIError(400, f"n={req.n} exceeds this server's max_batch_size={config.max_batch_size}", param="n")
        prompt, params = await run_in_threadpool(prepare, req, chat_model, config)
        try:
            future = worker.submit(prompt, params)
        except QueueFull as e:
            raise APIError(503, f"the server is busy ({e}); retry later", type="server_error",
                           code="overloaded") from None
        try:
            completions = await asyncio.wrap_future(future)
        except Exception as e:  # the worker logged the traceback; the client gets a 500 and the server goes on
            raise APIError(500, f"generation failed: {type(e).__name__}: {e}", type="server_error") from None
        choices = await run_in_threadpool(lambda: [finish(chat_model, c, req.stop_list) for c in completions])
        return JSONResponse(chat_completion(config.served_model_name, choices, prompt.num_tokens))

    return app


async def _read_json(request: Request, max_bytes: int) -> Any:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise APIError(413, f"the request body is {declared} bytes; the limit is {max_bytes}", code="request_too_large")
    body = await request.body()
    if len(body) > max_bytes:
        raise APIError(413, f"the request body is {len(body)} bytes; the limit is {max_bytes}", code="request_too_large")
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise APIError(400, f"the request body is not valid JSON: {e}", code="invalid_json") from None


def prepare(req: ChatRequest, chat_model: ChatModel, config: ServeConfig) -> tuple[PreparedPrompt, SamplingParams]:
    """Messages -> the Processor's conversation + decoded images -> prompt ids; limits checked.

    Runs in the server's thread pool (image decoding and tokenization, no model work)."""
    n_images = sum(1 for m in req.messages if isinstance(m.content, list) for p in m.content if p.type == "image_url")
    if n_images and not chat_model.supports_images:
        raise APIError(400, f"{config.served_model_name} is a text-only model; remove the image parts",
                       param="messages", code="images_not_supported")
    if n_images > config.max_images:
        raise APIError(400, f"{n_images} images in the request; this server accepts at most {config.max_images}",
                       param="messages", code="too_many_images")
    conversation: list[dict[str, Any]] = []
    images = []
    for i, m in enumerate(req.messages):
        role = "system" if m.role == "developer" else m.role
        texts = [m.content] if isinstance(m.content, str) else [p.text for p in m.content if p.type == "text"]
        for text in texts:
            reserved = [t for t in RESERVED_TOKENS if t in text]
            if reserved:
                raise APIError(400, f"messages.{i}: the text contains the reserved token(s) {', '.join(reserved)}; "
                                    "send images as image_url parts", param=f"messages.{i}.content")
        if isinstance(m.content, str):
            conversation.append({"role": role, "content": m.content})
            continue
        parts: list[dict[str, Any]] = []
        for j, part in enumerate(m.content):
            if part.type == "text":
                parts.append({"type": "text", "text": part.text})
            else:
                param = f"messages.{i}.content.{j}.image_url.url"
                images.append(load_image_url(part.image_url.url, config.allowed_root, param))
                parts.append({"type": "image"})
        conversation.append({"role": role, "content": parts})

    prompt = chat_model.encode(conversation, images)
    room = chat_model.max_model_len - prompt.num_tokens
    if room < 1:
        raise APIError(400, f"the prompt is {prompt.num_tokens} tokens (images included); this model's context is "
                            f"{chat_model.max_model_len} tokens", param="messages", code="context_length_exceeded")
    requested = req.requested_max_tokens
    if requested is not None and requested > room:
        raise APIError(400, f"the prompt is {prompt.num_tokens} tokens and {requested} completion tokens were asked "
                            f"for; this model's context is {chat_model.max_model_len} tokens",
                       param="max_tokens", code="context_length_exceeded")
    params = SamplingParams(
        temperature=1.0 if req.temperature is None else req.temperature,
        top_p=req.top_p if req.top_p is not None and req.top_p < 1.0 else None,
        top_k=req.top_k if req.top_k is not None and req.top_k > 0 else None,
        n=req.n or 1,
        max_tokens=requested if requested is not None else min(config.max_new_tokens, room),
        seed=req.seed,
    )
    return prompt, params


def finish(chat_model: ChatModel, completion: Completion, stops: list[str]) -> dict[str, Any]:
    """One choice: text (cut before the first stop string), finish_reason, completion_tokens.

    Generation does not watch for stop strings; the text is cut afterwards, and completion_tokens
    counts the fewest tokens whose text contains the stop string (what a server that stops there
    would have generated)."""
    ids = completion.token_ids
    text = chat_model.decode(ids)
    cut = _first_stop(text, stops)
    if cut is None:
        return {"text": text, "finish_reason": "stop" if completion.hit_eos else "length",
                "completion_tokens": len(ids)}
    lo, hi = 1, len(ids)  # binary search: containing a stop string is monotone in the prefix length
    while lo < hi:
        mid = (lo + hi) // 2
        if _first_stop(chat_model.decode(ids[:mid]), stops) is None:
            lo = mid + 1
        else:
            hi = mid
    return {"text": text[:cut], "finish_reason": "stop", "completion_tokens": lo}


def _first_stop(text: str, stops: list[str]) -> int | None:
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(found) if found else None


def serve(config: ServeConfig, log_level: str = "info") -> None:
    """Load the checkpoint and serve it until interrupted (what ``paddlemix-r1 serve`` runs)."""
    import uvicorn

    from paddlemix_r1.serve.backend import load_chat_model

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    chat_model = load_chat_model(config.model_path, config.served_model_name, config.dtype, config.max_model_len)
    log.info("serving %s from %s: context %d tokens, max_batch_size %d, batch window %.1f ms, images %s",
             config.served_model_name, config.model_path, chat_model.max_model_len, config.max_batch_size,
             config.batch_window_ms, f"from {config.allowed_root} or data URLs" if config.allowed_root else
             "as data URLs only")
    uvicorn.run(create_app(chat_model, config), host=config.host, port=config.port, log_level=log_level)
