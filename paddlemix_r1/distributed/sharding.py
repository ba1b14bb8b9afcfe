"""GPU-only memory savers: sharded optimizer state / gradients / parameters, and the reference model
kept in bf16 or in host memory.

Paddle's ``group_sharded_parallel`` asserts GPU/XPU devices, and bf16 matmuls have no CPU kernel,
so every entry point here checks the device first and fails with a message that says what to use
instead. Sharding levels (ZeRO numbering, Paddle level names):

    1  optimizer state          level "os"      (Paddle implements it as "os_g")
    2  + gradients              level "os_g"
    3  + parameters             level "p_g_os"

Under stage 1/2 every rank still holds whole parameters, so rollouts run on the unwrapped model;
under stage 3 parameters are gathered layer by layer inside the wrapper's forward, so every pass
goes through the wrapper. The LM head (and the embedding it may be tied to) stays unsliced: the
trainer applies it to hidden states outside the forward, in chunks (ops/logprobs.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import paddle

from paddlemix_r1.distributed.env import DistEnv

SHARDING_LEVELS = {1: "os", 2: "os_g", 3: "p_g_os"}


def require_gpu(feature: str, env: DistEnv) -> None:
    """Raise a clear error if ``feature`` is asked for on a process that does not run on a GPU."""
    if not env.on_gpu:
        raise RuntimeError(
            f"{feature} needs CUDA devices (this process runs on {env.device}): Paddle's group_sharded_parallel "
            "supports GPU/XPU only and its CPU build has no bf16 matmul. On CPU use sharding_stage=0, "
            "ref_model_offload=false and float32 dtypes.")


class ShardedModel:
    """Calls go through the sharding wrapper (its forward does the bookkeeping and, in stage 3, gathers
    parameters); attribute access (``lm_head``, ``config``, ``new_cache`` ...) goes to the model."""

    def __init__(self, wrapper: paddle.nn.Layer, inner: paddle.nn.Layer):
        self._wrapper, self._inner = wrapper, inner

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._wrapper(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def train(self, mode: bool = True) -> None:
        self._wrapper.train() if mode else self._wrapper.eval()

    def eval(self) -> None:
        self._wrapper.eval()


def shard_model_and_optimizer(model: paddle.nn.Layer, optimizer: paddle.optimizer.Optimizer, stage: int,
                              env: DistEnv, offload: bool = False) -> tuple[ShardedModel, Any]:
    """Wrap ``model`` and ``optimizer`` with Paddle's group-sharded data parallelism.

    The returned optimizer clips by the global norm across shards if ``optimizer`` was built with
    ``grad_clip=paddle.nn.ClipGradByGlobalNorm(...)`` (Paddle swaps in its sharded clip). Gradients
    are reduced by the wrapper's backward hooks: do not all-reduce them again.
    """
    if stage not in SHARDING_LEVELS:
        raise ValueError(f"sharding stage must be one of {sorted(SHARDING_LEVELS)}, got {stage}")
    require_gpu(f"sharding_stage={stage}", env)
    if not env.is_distributed:
        raise RuntimeError(f"sharding_stage={stage} needs more than one rank; start with paddle.distributed.launch")
    from paddle.distributed.sharding import group_sharded_parallel

    kwargs: dict[str, Any] = {"offload": offload}
    if stage == 3:
        keep_whole = [model.lm_head]
        if getattr(model.config, "tie_word_embeddings", False):
            keep_whole.append(model.model.embed_tokens)
        kwargs["exclude_layer"] = [id(layer) for layer in keep_whole]
    wrapper, sharded_opt, _ = group_sharded_parallel(model, optimizer, SHARDING_LEVELS[stage], **kwargs)
    return ShardedModel(wrapper, model), sharded_opt


def full_state_for_save(model: ShardedModel | paddle.nn.Layer, stage: int) -> None:
    """Before saving under stage 3, gather the sliced parameters back into whole tensors."""
    if stage == 3:
        model._wrapper.get_all_parameters()


@contextlib.contextmanager
def host_offloaded(model: paddle.nn.Layer, env: DistEnv) -> Iterator[paddle.nn.Layer]:
    """Move a host-resident model to this rank's GPU for the block, and back to host memory after.

    For the reference model: it is only needed for one no-grad pass per generation round, so it
    does not have to occupy device memory during rollouts and the policy's backward pass.
    """
    require_gpu("ref_model_offload", env)
    model.to(device=env.device)
    try:
        yield model
    finally:
        model.to(device="cpu")
        paddle.device.cuda.empty_cache()


@contextlib.contextmanager
def device_scope(device: str) -> Iterator[None]:
    """Create tensors on ``device`` inside the block (e.g. load a model straight into host memory)."""
    before = paddle.get_device()
    paddle.set_device(device)
    try:
        yield
    finally:
        paddle.set_device(before)
