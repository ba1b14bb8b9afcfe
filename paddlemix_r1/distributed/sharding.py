"""GPU-only memory savers: sharded optimizer state / gradients / parameters, and the reference model
kept in bf16 or in host memory.

Paddle's ``group_sharded_parallel`` asserts GPU/XPU devices, and bf16 matmuls have no CPU kernel,
so every entry point here checks the device first and fails with a message that says what to use
instead. Sharding levels (ZeRO numbering, Paddle level names):

    1  optimizer state          level "os"      (Paddle implements it as "os_g")
    2  + gradients              level "os_g"
    3  + parameters             level "p_g_os"

Every pass of the policy that computes with its parameters goes through the sharding wrapper's
forward (``PolicyPasses``, below): Paddle's stage 2 reduces gradients only for passes that went
through it, and stage 3 gathers parameters only inside it. Under stage 1/2 every rank still holds
whole parameters, so rollouts and no-grad passes (which need no reduction) run on the unwrapped
model; under stage 3 every pass goes through the wrapper. The LM head (and the embedding it may be
tied to) stays unpartitioned: the trainer applies it to hidden states outside the forward, in
chunks (ops/logprobs.py).

On CPU, ``sharding_contract.installed()`` replaces Paddle's function by a double that enforces the
same contract with one rank (tests only; see sharding_contract.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import paddle

from paddlemix_r1.distributed import sharding_contract
from paddlemix_r1.distributed.env import DistEnv

SHARDING_LEVELS = {1: "os", 2: "os_g", 3: "p_g_os"}


def require_gpu(feature: str, env: DistEnv) -> None:
    """Raise a clear error if ``feature`` is asked for on a process that does not run on a GPU."""
    if not env.on_gpu:
        raise RuntimeError(
            f"{feature} needs CUDA devices (this process runs on {env.device}): Paddle's group_sharded_parallel "
            "supports GPU/XPU only and its CPU build has no bf16 matmul. On CPU use sharding_stage=0, "
            "ref_model_offload=false and float32 dtypes.")


def require_sharding_backend(stage: int, env: DistEnv) -> None:
    """Sharding needs GPUs and more than one rank, except under the CPU contract double (tests)."""
    if sharding_contract.is_installed():
        return
    require_gpu(f"sharding_stage={stage}", env)
    if not env.is_distributed:
        # group_sharded_stage2.py (GroupShardedStage2.__init__) and group_sharded_stage3.py
        # (GroupShardedStage3.__init__) both assert self._group.nranks > 1, "Training must be distributed".
        raise RuntimeError(f"sharding_stage={stage} needs more than one rank: Paddle's GroupShardedStage2/3 assert "
                           "nranks > 1. Start with paddle.distributed.launch, or use sharding_stage=0 on one GPU.")


def check_offload(stage: int, offload: bool) -> None:
    """``sharding_offload`` works with stage 3 only (raises ValueError otherwise)."""
    if offload and stage != 3:
        raise ValueError(
            f"sharding_offload=true needs sharding_stage=3 (got sharding_stage={stage}): at stages 1/2 Paddle's "
            "GroupShardedOptimizerStage2(offload=True) asserts fp16 parameters (group_sharded_optimizer_stage2.py: "
            "'Only support offload strategy ... with AMP/Pure FP16'), and this trainer runs fp32 or bf16 policies.")


class PolicyPasses(paddle.nn.Layer):
    """The layer handed to ``group_sharded_parallel``: each pass of the policy is a call of its forward,
    chosen by the explicit ``policy_pass`` argument.

    Why: Paddle's stage-2 wrapper registers its gradient-reduce hooks and arms them (once per call) in
    its own forward, in training mode only (group_sharded_stage2.py: ``GroupShardedStage2.forward`` ->
    ``_init_internal_storage`` -> ``_fresh_trainable`` -> ``_setup_backward_hooks``; ``_clear_counters``
    sets ``_grad_reduced``). A pass that calls the inner model's parts directly (the log-prob passes of
    grpo/logprobs.py: ``model.embed``, ``model.model``) bypasses that forward, and none of its gradients
    is ever reduced (audit B7). Stage 3 likewise keeps partitioned parameters whole only inside forwards
    it hooks. So such a pass is a function ``fn(policy, *args)`` run here, as ``policy_pass=fn``.
    """

    def __init__(self, policy: paddle.nn.Layer):
        super().__init__()
        self.policy = policy

    def forward(self, *args: Any, policy_pass: str | Callable[..., Any] = "forward", **kwargs: Any) -> Any:
        if policy_pass == "forward":
            return self.policy(*args, **kwargs)
        if callable(policy_pass):
            return policy_pass(self.policy, *args, **kwargs)
        raise ValueError(f"policy_pass must be 'forward' or a function of (policy, *args), got {policy_pass!r}")


class ShardedModel:
    """The policy as the trainer sees it under sharding: calls and ``run_pass`` go through the sharding
    wrapper's forward; attribute access (``lm_head``, ``config``, ``model`` ...) goes to the inner model."""

    # Methods of the inner model that compute with its parameters and have no route through the wrapper.
    _BYPASSING = frozenset({"embed", "forward"})

    def __init__(self, wrapper: paddle.nn.Layer, inner: paddle.nn.Layer, stage: int):
        self._wrapper, self._inner, self.stage = wrapper, inner, stage

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._wrapper(*args, policy_pass="forward", **kwargs)

    def run_pass(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(policy, *args, **kwargs)`` inside the wrapper's forward (a log-prob pass, grpo/logprobs.py)."""
        return self._wrapper(*args, policy_pass=fn, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if name in self._BYPASSING:
            raise AttributeError(f"ShardedModel.{name}: a pass that does not go through the sharding wrapper's "
                                 "forward is not reduced (stage 2) or sees partitioned parameters (stage 3); add it "
                                 "to PolicyPasses")
        return getattr(self._inner, name)

    @property
    def gathers_parameters(self) -> bool:
        """Stage 3: parameters are whole only inside the forwards of their own sub-layers."""
        return self.stage == 3

    def train(self, mode: bool = True) -> None:
        self._wrapper.train() if mode else self._wrapper.eval()

    def eval(self) -> None:
        self._wrapper.eval()


def stage3_exclude_layers(model: paddle.nn.Layer) -> list[paddle.nn.Layer]:
    """Sub-layers whose parameters stage 3 must keep whole: the LM head (and the embedding it may be tied
    to), because ops/logprobs.py applies it to hidden states in chunks, outside its forward.
    GroupShardedStage3 keeps a partitioned parameter whole only inside the forward of the sub-layer that
    owns it (group_sharded_stage3.py: ``_param_storage``, ``_release_param``); every other parameter of
    the policy is only read by its owner's forward (the CPU double checks it: tests/distributed)."""
    keep = [model.lm_head]
    if getattr(model.config, "tie_word_embeddings", False):
        keep.append(model.model.embed_tokens)
    return keep


def shard_model_and_optimizer(model: paddle.nn.Layer, optimizer: paddle.optimizer.Optimizer, stage: int,
                              env: DistEnv, offload: bool = False) -> tuple[ShardedModel, Any]:
    """Wrap ``model`` and ``optimizer`` with Paddle's group-sharded data parallelism.

    Load checkpoint weights into ``model`` before this call: under stage 3 a value set on a parameter
    afterwards does not reach its partition (resume: grpo/trainer.py). The returned optimizer clips by
    the global norm across shards if ``optimizer`` was built with ``grad_clip=ClipGradByGlobalNorm(...)``
    (Paddle swaps in its sharded clip), and its ``clear_grad`` takes no argument (Paddle's
    ``_redefine_opt_clear``). Gradients are reduced by the wrapper's backward hooks: do not all-reduce
    them again.
    """
    if stage not in SHARDING_LEVELS:
        raise ValueError(f"sharding stage must be one of {sorted(SHARDING_LEVELS)}, got {stage}")
    check_offload(stage, offload)
    require_sharding_backend(stage, env)
    from paddle.distributed.sharding import group_sharded_parallel  # the double when installed

    kwargs: dict[str, Any] = {"offload": offload}
    if stage == 3:
        kwargs["exclude_layer"] = [id(layer) for layer in stage3_exclude_layers(model)]
    wrapper, sharded_opt, _ = group_sharded_parallel(PolicyPasses(model), optimizer, SHARDING_LEVELS[stage], **kwargs)
    return ShardedModel(wrapper, model, stage), sharded_opt


def full_state_for_save(model: ShardedModel | paddle.nn.Layer, stage: int) -> None:
    """Before saving under stage 3, gather every partitioned parameter back into whole tensors.

    ``GroupShardedStage3.get_all_parameters(convert2cpu=False, with_freeze_param=False)`` gathers only
    trainable parameters by default: frozen ones (``freeze_vision``) would stay cleared. With
    ``convert2cpu`` the full values are copied to host memory and the parameters keep their
    partitioned status, so the next forward gathers and releases them as usual; without it they stay
    whole on the device (Paddle's comment: that gather has no matching release).
    """
    if stage == 3:
        model._wrapper.get_all_parameters(convert2cpu=True, with_freeze_param=True)


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
    """Compute on ``device`` inside the block (e.g. load a model straight into host memory); the ops' kernel
    choices are made again for it (a GPU process must not reach a fused kernel with host tensors)."""
    from paddlemix_r1 import ops

    before = paddle.get_device()
    paddle.set_device(device)
    ops.reset()
    try:
        yield
    finally:
        paddle.set_device(before)
        ops.reset()
