"""A CPU stand-in for ``paddle.distributed.sharding.group_sharded_parallel`` that enforces the parts of
Paddle's group-sharded contract our trainer relies on.

Paddle's sharding asserts GPU/XPU devices, and no GPU exists where the tests run. This double lets the
real trainer code run stages 1/2/3 on CPU, in one process, while it checks what Paddle's wrappers
require of their caller. Each rule below names the Paddle 3.3.1 source it mirrors (paths under
``paddle/distributed/``; ``gs`` = ``fleet/meta_parallel/sharding/``):

Every stage
  C1  ``optimizer.clear_grad`` is replaced by a method that takes no argument
      (``gs/group_sharded_stage2.py`` and ``gs/group_sharded_stage3.py``: ``_redefine_opt_clear``,
      ``def _opt_clear(self): clear_func()``); ``optimizer.minimize`` raises (stage 3:
      ``_redefine_opt_step``; stage 2: ``GroupShardedOptimizerStage2.minimize``).
  C2  ``group_sharded_parallel``'s signature, level names and argument checks
      (``sharding/group_sharded.py``); ``exclude_layer`` holds layer ids or class names.
Stages 1/2 (levels "os", "os_g": both build ``GroupShardedOptimizerStage2`` + ``GroupShardedStage2``)
  C3  ``offload=True`` asserts that some trainable parameter is fp16
      (``gs/group_sharded_optimizer_stage2.py``, ``__init__``: ``if offload: assert self._pfp16``).
  C4  Gradients are reduced by per-parameter backward hooks that the wrapper's ``forward`` registers
      (only in training mode) and re-arms on each call (``GroupShardedStage2.forward`` ->
      ``_init_internal_storage`` -> ``_fresh_trainable`` -> ``_setup_backward_hooks``, which returns
      early ``if not self.training``; then ``_clear_counters`` sets ``_grad_reduced[i] = True`` only
      ``if self.training``). A hook reduces the gradient the first time it fires after a forward
      and sets ``_grad_reduced[i] = False`` (``_get_reduce_fn``): a gradient of a pass that did not
      go through the wrapper's forward, or a contribution that completes after the parameter's
      reduce (a layer recomputed twice in one pass: each reentrant recompute runs its own nested
      ``paddle.autograd.backward``, ``fleet/recompute/recompute.py``, ``RecomputeFunction.backward``),
      is never reduced. The double records which parameters were reduced, and ``optimizer.step()``
      raises ``ShardingContractError`` for a parameter with a gradient that was not (fully) reduced.
      Large parameters take this direct path in Paddle; bucketed ones may be reduced later, which
      the double does not rely on.
Stage 3 (level "p_g_os": ``GroupShardedStage3``)
  C5  Every parameter with more than ``segment_size`` elements (default 2**20) of a layer not in
      ``exclude_layer`` is partitioned, trainable or not, and its data is cleared
      (``_segment_rank_params``, ``_flatten_layer_params``, ``_param_storage`` ends with
      ``param._clear_data()``); smaller trainable parameters and those of excluded layers stay whole.
  C6  A partitioned parameter is whole only between the forward pre- and post-hooks of the sub-layer
      that owns it (``_register_forward_hooks``, ``ForwardPreHooks``, ``ForwardPostHooks.forward`` ->
      ``_release_param``), and during that sub-layer's backward (``ForwardPostHooks.backward``
      gathers again; the parameter's backward hook ``_get_allreduce_fn`` releases it). The double
      clears the data exactly so: a read anywhere else fails, and a failure inside the wrapper's
      forward is reported as ``ShardingContractError`` naming the innermost running sub-layer and
      the partitioned parameters under it whose owner was not running.
  C7  A partitioned parameter's gradient reaches the optimizer only through its owner's backward
      (``_create_params_grad`` marks it, ``_get_allreduce_fn`` moves it to ``bw_storage``);
      ``_update_params_slice`` steps the per-rank slices. A gradient that arrives otherwise raises at
      ``optimizer.step()``.
  C8  The forward post-hook wraps the outputs of every layer that owns parameters in a PyLayer, so
      those outputs must be a Tensor or a tuple of Tensors (``_forward_post_hook``).
  C9  ``get_all_parameters(convert2cpu=False, with_freeze_param=False)``: without
      ``with_freeze_param`` only trainable partitioned parameters are gathered; frozen ones stay
      cleared. With ``convert2cpu`` the full values are copied into the parameters without changing
      their status; without it they stay "gathered" and are not released by the next forward.
  C10 Loading values into a partitioned parameter after wrapping does not reach its slice: the next
      gather overwrites the parameter with the slice (and ``set_value`` on a cleared parameter raises).

Deliberate departures, all because the double has exactly one rank: every reduction, all-gather and
broadcast is the identity (so a step computes what plain training computes); a rank's slice is the
whole parameter; ``offload`` moves nothing; ``group``/``dp_group`` must be None. Paddle's stage 2 and
stage 3 assert ``nranks > 1`` ("Training must be distributed"); the double exists to run one rank.
Cleared gradients are released (``clear_gradient(False)``) where Paddle zeroes its gradient buffers:
the same update whenever every trained parameter is reached by each backward.

Use it only as ``with sharding_contract.installed(): ...``; outside the block Paddle's function is back.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from types import MethodType
from typing import Any

import paddle
import paddle.nn as nn
from paddle.autograd import PyLayer

PADDLE_SEGMENT_SIZE = 2**20  # group_sharded_parallel's default segment_size
_LEVELS = ("os", "os_g", "p_g_os")
_CLEARED_DATA_ERRORS = ("holder_ should not be null", "not initialized")


class ShardingContractError(RuntimeError):
    """Our code did something Paddle's group-sharded wrappers would not support (see the module doc)."""


@dataclass
class Installation:
    """What one ``installed()`` block saw: the wrappers the stand-in built, in order."""

    segment_size: int
    wrappers: list[nn.Layer] = field(default_factory=list)


_ACTIVE: list[Installation] = []


def is_installed() -> bool:
    """True inside a ``with installed():`` block (then ``group_sharded_parallel`` is this double)."""
    return bool(_ACTIVE)


@contextlib.contextmanager
def installed(segment_size: int = PADDLE_SEGMENT_SIZE) -> Iterator[Installation]:
    """Replace ``paddle.distributed.sharding.group_sharded_parallel`` by the double for the block.

    ``segment_size``: the default of the stand-in's ``segment_size`` argument (Paddle's is 2**20);
    a tiny test model needs a small one for stage 3 to partition anything.
    """
    import paddle.distributed.sharding as paddle_sharding

    if _ACTIVE:
        raise RuntimeError("sharding_contract.installed() blocks do not nest")
    inst = Installation(segment_size)
    real = paddle_sharding.group_sharded_parallel
    paddle_sharding.group_sharded_parallel = _make_group_sharded_parallel(inst)
    _ACTIVE.append(inst)
    try:
        yield inst
    finally:
        _ACTIVE.pop()
        paddle_sharding.group_sharded_parallel = real


def _make_group_sharded_parallel(inst: Installation) -> Callable[..., tuple]:
    def group_sharded_parallel(model: nn.Layer, optimizer: paddle.optimizer.Optimizer, level: str, scaler=None,
                               group=None, offload: bool = False, sync_buffers: bool = False,
                               buffer_max_size: int = 2**23, segment_size: int = inst.segment_size,
                               sync_comm: bool = False, dp_group=None,
                               exclude_layer: Sequence[str | int] | None = None) -> tuple:
        """The double of Paddle's function (same signature; ``segment_size`` defaults to the block's)."""
        if not isinstance(model, nn.Layer):  # C2, group_sharded.py
            raise AssertionError("The model must be the instance of paddle.nn.Layer.")
        if not isinstance(optimizer, paddle.optimizer.Optimizer):
            raise AssertionError("The optimizer must be the instance of paddle.optimizer.Optimizer")
        if level not in _LEVELS:
            raise AssertionError("The level must be os, os_g or p_g_os.")
        if group is not None or dp_group is not None:
            raise ShardingContractError("the sharding double models the global group of one rank: pass group=None, "
                                        "dp_group=None")
        if level in ("os", "os_g"):
            opt = _Stage2Optimizer(optimizer, offload)
            wrapper: nn.Layer = _Stage2(model, opt)
        else:
            wrapper = _Stage3(model, optimizer, segment_size, offload, exclude_layer)
            opt = optimizer
        inst.wrappers.append(wrapper)
        return wrapper, opt, scaler

    return group_sharded_parallel


# ----------------------------------------------------------------------------------------------
# Stages 1/2
# ----------------------------------------------------------------------------------------------
class _Stage2Optimizer:
    """GroupShardedOptimizerStage2 for one rank: the inner optimizer steps every parameter (this
    rank owns all of them) and ``_broadcast_params`` is the identity. ``step`` and ``clear_grad``
    are redefined by the ``_Stage2`` layer, as in Paddle."""

    def __init__(self, optim: paddle.optimizer.Optimizer, offload: bool):
        if not hasattr(optim, "_master_weights"):  # group_sharded_optimizer_stage2.py, __init__
            raise AssertionError("Must use optimizer with _master_weights attribute")
        self._optim = optim
        self.local_params = list(optim._parameter_list)
        pfp16 = any(p.trainable and p.dtype == paddle.float16 for p in self.local_params)
        if offload and not pfp16:  # C3
            raise AssertionError("Only support offload strategy while using 'Adam', 'AdamW' and 'Momentum' optimizer "
                                 "with AMP/Pure FP16 (paddle: group_sharded_optimizer_stage2.py, "
                                 "GroupShardedOptimizerStage2.__init__)")
        self.offload = offload

    def _step(self) -> None:
        self._optim.step()

    def step(self) -> None:
        self._step()

    def minimize(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("optimizer.minimize() not support now, please use optimizer.step()")

    def state_dict(self) -> dict:
        return self._optim.state_dict()

    def set_state_dict(self, state_dict: dict) -> None:
        self._optim.set_state_dict(state_dict)

    def get_lr(self) -> float:
        return self._optim.get_lr()

    def set_lr(self, lr: float) -> None:
        self._optim.set_lr(lr)


class _Stage2(nn.Layer):
    """GroupShardedStage2 for one rank, keeping its hook bookkeeping (C4)."""

    def __init__(self, layer: nn.Layer, optimizer: _Stage2Optimizer):
        super().__init__()
        self._layer = layer
        self._opt = optimizer
        self._trainable = [p for p in optimizer.local_params if p.trainable]
        self._names = {p.name: n for n, p in layer.named_parameters()}
        self._hooks_set = False  # Paddle: len(self._bw_hooks) > 0
        self._armed: dict[str, bool] = {}  # Paddle: self._grad_reduced
        self._reduced: set[str] = set()
        self._unreduced: dict[str, str] = {}  # param name -> why its gradient (partly) escaped the reduce
        self.reduce_count = 0  # gradients reduced so far (for tests)
        self._redefine_opt_step()
        self._redefine_opt_clear()

    def forward(self, *inputs: Any, **kwargs: Any) -> Any:
        needs_fresh = not self._hooks_set and self.training
        if needs_fresh:
            self._setup_backward_hooks()
        self._clear_counters()
        return self._layer(*inputs, **kwargs)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._layer, name)

    def _setup_backward_hooks(self) -> None:
        if not self.training:
            return
        for p in self._trainable:
            p._register_backward_hook(self._reduce_fn(p))
        self._hooks_set = True

    def _clear_counters(self) -> None:
        if self.training:
            self._armed = {p.name: True for p in self._trainable}

    def _reduce_fn(self, param: paddle.Tensor) -> Callable[..., None]:
        @paddle.autograd.no_grad()
        def reduce(*_: Any) -> None:
            if self._armed.get(param.name):
                self._armed[param.name] = False
                self._reduced.add(param.name)  # dist.reduce over one rank: the gradient as it is
                self.reduce_count += 1
            else:
                self._unreduced.setdefault(
                    param.name, "a gradient contribution completed after the parameter's reduce of this forward "
                    "(or in a pass that did not call the wrapper's forward in training mode)")

        return reduce

    def _check_reduced(self) -> None:
        bad = []
        for p in self._trainable:
            if p.grad is None:
                continue
            if p.name in self._unreduced:
                bad.append(f"{self._names.get(p.name, p.name)}: {self._unreduced[p.name]}")
            elif p.name not in self._reduced:
                bad.append(f"{self._names.get(p.name, p.name)}: never reduced (no backward hook fired for it after a "
                           "forward of the wrapper in training mode)")
        if bad:
            raise ShardingContractError(
                f"stage 1/2: {len(bad)} gradient(s) would not be (fully) reduced over the ranks, e.g.\n  "
                + "\n  ".join(bad[:5])
                + "\nPaddle's GroupShardedStage2 registers and arms its reduce hooks in its forward, in training mode "
                "only, and reduces each gradient once per forward (group_sharded_stage2.py: forward, "
                "_setup_backward_hooks, _clear_counters, _get_reduce_fn).")

    def _redefine_opt_step(self) -> None:
        wrapper = self

        def _opt_step(opt: _Stage2Optimizer) -> None:
            wrapper._check_reduced()
            opt._step()  # _grad_scale (1 / nranks = 1), then the inner step, then _broadcast_params (identity)

        self._opt.step = MethodType(_opt_step, self._opt)

    def _redefine_opt_clear(self) -> None:
        clear_func = self._clear_gradients

        def _opt_clear(self: Any) -> None:  # no arguments: group_sharded_stage2.py, _redefine_opt_clear
            clear_func()

        self._opt.clear_grad = MethodType(_opt_clear, self._opt)

    def _clear_gradients(self) -> None:
        for p in self._trainable:
            p.clear_gradient(False)
        self._reduced.clear()
        self._unreduced.clear()


# ----------------------------------------------------------------------------------------------
# Stage 3
# ----------------------------------------------------------------------------------------------
class _GatherForBackward(PyLayer):
    """ForwardPostHooks: outputs pass through unchanged; their backward gathers the owner's parameters first."""

    @staticmethod
    def forward(ctx, *outputs: paddle.Tensor, gather: Callable[[], None]):
        ctx.gather = gather
        ctx.grad_none = [o.stop_gradient for o in outputs]
        copies = []
        for o in outputs:
            c = paddle.assign(o)
            c.stop_gradient = o.stop_gradient
            copies.append(c)
        return copies[0] if len(copies) == 1 else tuple(copies)

    @staticmethod
    def backward(ctx, *grads: paddle.Tensor):
        ctx.gather()
        out = tuple(None if none else g for g, none in zip(grads, ctx.grad_none))
        return out[0] if len(out) == 1 else out


class _Stage3(nn.Layer):
    """GroupShardedStage3 for one rank: partitions, gathers and releases as Paddle does (C5-C10)."""

    def __init__(self, layer: nn.Layer, optimizer: paddle.optimizer.Optimizer, segment_size: int, offload: bool,
                 exclude_layer: Sequence[str | int] | None):
        super().__init__()
        if segment_size < 0:
            raise AssertionError("segment_size must be GE than 0.")
        exclude = [] if exclude_layer is None else exclude_layer
        if not isinstance(exclude, (list, tuple)) or not all(isinstance(e, (str, int)) for e in exclude):
            raise AssertionError("the exclude_layers must be a list with layers' name or layers' id")
        self._layer = layer
        self._optim = optimizer
        self._offload = offload
        self._segment_size = segment_size
        self._exclude = list(exclude)
        self._names = {p.name: n for n, p in layer.named_parameters()}
        self._layer_names = {id(sub): n for n, sub in layer.named_sublayers(include_self=True)}
        self._layer_params: dict[int, list[paddle.Tensor]] = {}  # Paddle: _trainable_params (sliced, any)
        self._owner: dict[str, str] = {}  # partitioned param name -> owning layer's name
        self._unsliced: set[str] = set()
        self._fw: dict[str, paddle.Tensor] = {}  # this rank's slice (one rank: the whole value)
        self._bw: dict[str, paddle.Tensor] = {}  # reduced gradient slices
        self._status: dict[str, str] = {}  # "part" | "all"
        self._use: dict[str, int] = {}
        self._full_grad: set[str] = set()
        self._stray: set[str] = set()
        self._running: list[nn.Layer] = []  # sub-layers whose forward is running (innermost last)
        self.gather_count = 0  # gathers of a partitioned parameter so far (for tests)
        self._segment(layer)
        self._register_forward_hooks(layer)
        self._register_backward_hooks()
        self._redefine_opt_step()
        self._redefine_opt_clear()

    @property
    def partitioned(self) -> list[str]:
        """Structured names of the partitioned parameters."""
        return sorted(self._names.get(n, n) for n in self._fw)

    # ----- partitioning (C5) -----
    def _excluded(self, layer: nn.Layer) -> bool:
        return id(layer) in self._exclude or layer.__class__.__name__ in self._exclude

    def _segment(self, layer: nn.Layer) -> None:
        own = layer.parameters(include_sublayers=False)
        if own and id(layer) not in self._layer_params:
            if self._excluded(layer):
                self._unsliced.update(p.name for p in own if p.trainable)
            else:
                sliced = []
                for p in own:
                    if p._numel() > self._segment_size:
                        sliced.append(p)
                        if p.name not in self._fw:
                            self._fw[p.name] = p.detach().clone()
                            self._owner[p.name] = self._layer_names.get(id(layer), "?")
                            self._status[p.name], self._use[p.name] = "part", 0
                            p._clear_data()
                    elif p.trainable:
                        self._unsliced.add(p.name)
                self._layer_params[id(layer)] = sliced
        for sub in layer.children():
            self._segment(sub)

    # ----- gather / release (C6) -----
    def _gather(self, p: paddle.Tensor) -> None:
        if self._status[p.name] == "all":
            self._use[p.name] += 1
            return
        self._fw[p.name]._share_buffer_to(p)  # all_gather over one rank: the slice is the parameter
        self._status[p.name], self._use[p.name] = "all", 1
        self.gather_count += 1

    def _release(self, p: paddle.Tensor) -> None:
        self._use[p.name] -= 1
        if self._use[p.name] <= 0:
            self._use[p.name] = 0
            p._clear_data()
            self._status[p.name] = "part"

    def _gather_for_backward(self, layer_id: int) -> None:
        for p in self._layer_params[layer_id]:
            self._gather(p)
            if p.trainable:
                self._full_grad.add(p.name)  # _create_params_grad

    def _register_forward_hooks(self, layer: nn.Layer) -> None:
        layer.register_forward_pre_hook(self._enter)
        layer.register_forward_post_hook(self._leave)
        if layer.parameters(include_sublayers=False) and not self._excluded(layer):
            layer.register_forward_pre_hook(self._pre_hook)
            layer.register_forward_post_hook(self._post_hook)
        for sub in layer.children():
            self._register_forward_hooks(sub)

    def _enter(self, layer: nn.Layer, inputs: Any) -> None:
        self._running.append(layer)

    def _leave(self, layer: nn.Layer, inputs: Any, outputs: Any) -> None:
        if self._running and self._running[-1] is layer:
            self._running.pop()

    def _pre_hook(self, layer: nn.Layer, inputs: Any) -> None:
        for p in self._layer_params[id(layer)]:
            self._gather(p)

    def _post_hook(self, layer: nn.Layer, inputs: Any, outputs: Any) -> Any:
        for p in self._layer_params[id(layer)]:
            self._release(p)
        single = isinstance(outputs, paddle.Tensor)
        outs = (outputs,) if single else outputs
        if not isinstance(outs, tuple) or not all(isinstance(o, paddle.Tensor) for o in outs):
            raise ShardingContractError(
                f"stage 3 wraps the outputs of '{self._layer_names.get(id(layer), '?')}' "
                f"({layer.__class__.__name__}), a layer that owns parameters, in a PyLayer: they must be a Tensor "
                f"or a tuple of Tensors, got {type(outputs).__name__} (group_sharded_stage3.py: _forward_post_hook)")
        if not paddle.is_grad_enabled():
            return outputs
        layer_id = id(layer)
        return _GatherForBackward.apply(*outs, gather=lambda: self._gather_for_backward(layer_id))

    # ----- gradients (C7) -----
    def _register_backward_hooks(self) -> None:
        seen = set()
        for params in self._layer_params.values():
            for p in params:
                if p.trainable and p.name not in seen:
                    seen.add(p.name)
                    p._register_backward_hook(self._allreduce_fn(p))

    def _allreduce_fn(self, p: paddle.Tensor) -> Callable[..., None]:
        @paddle.autograd.no_grad()
        def allreduce_(*_: Any) -> None:
            if p.name in self._full_grad:
                g = p.grad.detach().clone()  # all_reduce over one rank, scaled by 1 / nranks = 1
                self._bw[p.name] = g if p.name not in self._bw else self._bw[p.name] + g
                p.clear_gradient(False)
                self._full_grad.discard(p.name)
            elif p.grad is not None:
                self._stray.add(p.name)
            if self._status[p.name] == "all":
                self._use[p.name] = 1
                self._release(p)

        return allreduce_

    def _redefine_opt_step(self) -> None:
        opt_step = self._optim.step
        wrapper = self

        def _opt_step(opt: paddle.optimizer.Optimizer) -> None:
            wrapper._check_stray()
            sliced = [p for p in opt._parameter_list if p.name in wrapper._fw]
            for p in sliced:  # _update_params_slice: the optimizer steps the slices with the reduced gradients
                wrapper._fw[p.name]._share_buffer_to(p)
                if p.name in wrapper._bw:
                    p._copy_gradient_from(wrapper._bw[p.name])
            opt_step()
            for p in sliced:
                wrapper._fw[p.name] = p.detach().clone()
                p.clear_gradient(False)
                p._clear_data()
                wrapper._status[p.name], wrapper._use[p.name] = "part", 0
            wrapper._bw.clear()

        def _opt_minimize(opt: paddle.optimizer.Optimizer, *args: Any, **kwargs: Any) -> None:
            raise RuntimeError("optimizer.minimize() not support now, please use optimizer.step()")

        self._optim.step = MethodType(_opt_step, self._optim)
        self._optim.minimize = MethodType(_opt_minimize, self._optim)

    def _redefine_opt_clear(self) -> None:
        clear_func = self._clear_gradients

        def _opt_clear(self: Any) -> None:  # no arguments: group_sharded_stage3.py, _redefine_opt_clear
            clear_func()

        self._optim.clear_grad = MethodType(_opt_clear, self._optim)

    def _clear_gradients(self) -> None:
        for p in self._optim._parameter_list:
            p.clear_gradient(False)
        self._bw.clear()
        self._full_grad.clear()
        self._stray.clear()

    def _check_stray(self) -> None:
        if self._stray:
            names = sorted(self._names.get(n, n) for n in self._stray)
            raise ShardingContractError(
                f"stage 3: partitioned parameter(s) {names} got a gradient outside the backward of the sub-layer "
                "that owns them; Paddle only keeps gradients that its ForwardPostHooks.backward prepared "
                "(group_sharded_stage3.py: _create_params_grad, _get_allreduce_fn)")

    # ----- whole parameters for saving (C9) -----
    def get_all_parameters(self, convert2cpu: bool = False, with_freeze_param: bool = False) -> None:
        """As Paddle's: gather the partitioned parameters (frozen ones only ``with_freeze_param``)."""
        for params in self._layer_params.values():
            for p in params:
                if not (with_freeze_param or p.trainable):
                    continue
                if convert2cpu:
                    self._fw[p.name].clone()._share_buffer_to(p)  # a full copy; the status stays "part"
                else:
                    self._gather(p)

    # ----- forward -----
    def forward(self, *inputs: Any, **kwargs: Any) -> Any:
        self._running = []
        try:
            return self._layer(*inputs, **kwargs)
        except RuntimeError as e:
            if not any(s in str(e) for s in _CLEARED_DATA_ERRORS):
                raise
            raise ShardingContractError(self._describe_cleared_read()) from e

    def _describe_cleared_read(self) -> str:
        inner = self._running[-1] if self._running else self._layer
        name = self._layer_names.get(id(inner), "?") or "<the wrapped layer>"
        under = {id(s) for s in inner.sublayers(include_self=True)}
        suspects = sorted(
            f"{self._names.get(p.name, p.name)} (owned by '{self._owner[p.name]}')"
            for lid, params in self._layer_params.items() if lid in under
            for p in params if self._status[p.name] == "part")
        return (f"stage 3: a partitioned parameter was read while its data was cleared, inside the forward of "
                f"'{name}' ({inner.__class__.__name__}). Partitioned parameters under it whose owning sub-layer's "
                f"forward was not running: {suspects or 'none (the read was of another layer)'}. Paddle keeps a "
                "parameter of more than segment_size elements whole only inside the forward (and backward) of the "
                "sub-layer that owns it: call that sub-layer, or exclude it (exclude_layer) "
                "(group_sharded_stage3.py: _param_storage, _register_forward_hooks, ForwardPreHooks, _release_param).")

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._layer, name)

