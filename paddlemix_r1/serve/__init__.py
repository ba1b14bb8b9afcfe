"""Serve a checkpoint over OpenAI-compatible HTTP (``paddlemix-r1 serve``; docs/serve.md).

``app`` is the HTTP layer, ``worker`` the model thread that batches concurrent requests into one
``generate`` call, ``schemas`` the request validation, ``images`` the image_url decoding, ``backend``
the loaded checkpoint.
"""

from paddlemix_r1.serve.app import create_app, serve
from paddlemix_r1.serve.backend import ChatModel, PreparedPrompt, load_chat_model
from paddlemix_r1.serve.config import ServeConfig
from paddlemix_r1.serve.schemas import APIError, parse_chat_request
from paddlemix_r1.serve.worker import BatchWorker, Completion, SamplingParams

__all__ = ["APIError", "BatchWorker", "ChatModel", "Completion", "PreparedPrompt", "SamplingParams", "ServeConfig",
           "create_app", "load_chat_model", "parse_chat_request", "serve"]
