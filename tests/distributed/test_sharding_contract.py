"""Sharded GRPO on CPU through the contract double of Paddle's group_sharded_parallel
(paddlemix_r1/distributed/sharding_contract.py): the double enforces what Paddle's stage 1/2/3
wrappers require of us (B6 clear_grad, B7 reduce hooks, B9 offload, stage-3 partitioning, R2
get_all_parameters, R3 resume), and with one rank a whole trainer step at each stage computes what
stage 0 computes. Also the stage-3 rollout's collective stop (B13) and the per-micro-batch
finiteness agreement of sharded runs (R1)."""

from __future__ import annotations

import numpy as np
import paddle
import paddle.nn as nn
import pytest
from launching import base_cfg

import paddlemix_r1.distributed as dist_pkg
from paddlemix_r1.data.synthetic import counting_rows
from paddlemix_r1.distributed import Coordinator, DistEnv, sharding, sharding_contract
from paddlemix_r1.distributed.env import get_env
from paddlemix_r1.distributed.sharding_contract import ShardingContractError
from paddlemix_r1.generation import generate
from paddlemix_r1.grpo import trainer as trainer_mod
from paddlemix_r1.grpo.config import GRPOConfig
from paddlemix_r1.grpo.logprobs import RolloutInputs, completion_logprobs
from paddlemix_r1.grpo.trainer import GRPOTrainer
from paddlemix_r1.models import from_pretrained
from paddlemix_r1.processing import Processor
from paddlemix_r1.rewards import list_rewards, register_reward


def text_length(completions, **_):
    """Characters / 100: differs between samples, so every group has a non-zero advantage."""
    return [len(text) / 100 for text in completions]


REWARD = "sharding_contract_text_length"
if REWARD not in list_rewards():
    register_reward(REWARD, text_length)

# Small enough that stage 3 partitions every tiny-model parameter outside the excluded layers.
TINY_SEGMENT = 0


def _cfg(tiny: str, out, **kw) -> GRPOConfig:
    # adam_epsilon 1e-4: Adam's first step is lr * g / (|g| + eps); a larger eps keeps the update
    # proportional to g where g ~ 0, so fp32 rounding cannot be amplified into visible moves.
    return GRPOConfig(**base_cfg(tiny, out, adam_epsilon=1e-4, **{"reward_funcs": [REWARD], **kw}))


def _params(model: nn.Layer) -> dict[str, np.ndarray]:
    return {n: p.numpy().copy() for n, p in model.named_parameters()}


def _train(tiny: str, out, stage: int = 0, **kw) -> GRPOTrainer:
    """A trainer run to max_steps (stage > 0: under the double; its wrapper is ``trainer.sharding_wrapper``)."""
    cfg = _cfg(tiny, out, sharding_stage=stage, **kw)
    if not stage:
        tr = GRPOTrainer(cfg)
        tr.train()
        return tr
    with sharding_contract.installed(segment_size=TINY_SEGMENT) as inst:
        tr = GRPOTrainer(cfg)
        tr.train()
    (tr.sharding_wrapper,) = inst.wrappers
    return tr


def _tiny_batch(tiny: str, g: int = 2):
    proc = Processor.from_pretrained(tiny)
    model = from_pretrained(tiny)
    rows = counting_rows(2, seed=7)
    convs = [[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": r["problem"]}]}] for r in rows]
    batch = proc(convs, [r["images"] for r in rows])
    out = generate(model, batch, max_new_tokens=5, do_sample=True, num_return_sequences=g,
                   eos_token_id=proc.eos_token_id, pad_token_id=proc.pad_token_id, seed=1)
    inp = RolloutInputs(out.prompt_ids, out.completion_ids, out.attention_mask, out.position_ids,
                        batch["pixel_values"], batch["image_grid_thw"], g)
    return model, inp, proc, batch


def _adamw(model: nn.Layer) -> paddle.optimizer.AdamW:
    return paddle.optimizer.AdamW(learning_rate=1e-3, parameters=[p for p in model.parameters() if not p.stop_gradient])


# ----- the double itself -----
def test_sharding_double_is_active_only_inside_its_block(tiny_ckpt, tmp_path):
    import paddle.distributed.sharding as paddle_sharding

    real = paddle_sharding.group_sharded_parallel
    with sharding_contract.installed() as inst:
        assert sharding_contract.is_installed()
        assert paddle_sharding.group_sharded_parallel is not real
        assert inst.segment_size == 2**20  # Paddle's default
    assert not sharding_contract.is_installed() and paddle_sharding.group_sharded_parallel is real
    with pytest.raises(RuntimeError, match="needs CUDA devices"):  # outside the block, CPU sharding is refused
        GRPOTrainer(_cfg(tiny_ckpt, tmp_path, sharding_stage=2))
    one_gpu = DistEnv(rank=0, world_size=1, local_rank=0, device="gpu:0", coordinator=Coordinator.single())
    with pytest.raises(RuntimeError, match="more than one rank"):  # Paddle's stage 2/3 assert nranks > 1
        sharding.shard_model_and_optimizer(nn.Linear(2, 2), _adamw(nn.Linear(2, 2)), 2, one_gpu)


@pytest.mark.parametrize("level", ["os", "os_g", "p_g_os"])
def test_sharding_double_clear_grad_takes_no_arguments(level):
    """B6: Paddle replaces optimizer.clear_grad by ``_opt_clear(self)``."""
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    with sharding_contract.installed():
        from paddle.distributed.sharding import group_sharded_parallel

        _, opt, _ = group_sharded_parallel(model, _adamw(model), level)
    with pytest.raises(TypeError, match="set_to_zero"):
        opt.clear_grad(set_to_zero=False)
    opt.clear_grad()


def test_sharding_double_offload_needs_fp16_at_stages_1_2(tiny_ckpt):
    """B9: GroupShardedOptimizerStage2(offload=True) asserts fp16 parameters; GRPOConfig refuses it up front."""
    model = nn.Linear(4, 4)
    with sharding_contract.installed():
        from paddle.distributed.sharding import group_sharded_parallel

        for level in ("os", "os_g"):
            with pytest.raises(AssertionError, match="AMP/Pure FP16"):
                group_sharded_parallel(model, _adamw(model), level, offload=True)
        group_sharded_parallel(model, _adamw(model), "p_g_os", offload=True)  # stage 3: fine
    for stage in (0, 1, 2):
        with pytest.raises(ValueError, match=r"sharding_offload.*sharding_stage=3"):
            GRPOConfig(sharding_stage=stage, sharding_offload=True)
    GRPOConfig(sharding_stage=3, sharding_offload=True)
    with pytest.raises(ValueError, match="sharding_offload"):  # direct callers are refused too
        sharding.shard_model_and_optimizer(model, _adamw(model), 2, get_env(), offload=True)


def test_sharding_double_stage2_reduces_only_passes_through_its_forward(tiny_ckpt):
    """B7: a pass called on the inner model (``grpo.logprobs.shared_prefix_hidden``) never reaches the stage-2
    wrapper's forward, which registers and arms the reduce hooks; neither does a wrapper forward in eval
    mode. Our ShardedModel routes both passes through the wrapper."""
    model, inp, _, _ = _tiny_batch(tiny_ckpt)
    model.train()
    with sharding_contract.installed():
        from paddle.distributed.sharding import group_sharded_parallel

        wrapper, opt, _ = group_sharded_parallel(model, _adamw(model), "os_g")
        completion_logprobs(model, inp, 1.0).sum().backward()  # bypasses wrapper.forward (today's __getattr__)
        with pytest.raises(ShardingContractError, match="never reduced"):
            opt.step()
        opt.clear_grad()
        wrapper.eval()
        length = inp.prompt_ids.shape[1]
        wrapper(input_ids=inp.prompt_ids, attention_mask=inp.attention_mask[::2, :length],
                pixel_values=inp.pixel_values, image_grid_thw=inp.image_grid_thw,
                ).logits.sum().backward()  # through the forward, but in eval mode
        with pytest.raises(ShardingContractError, match="never reduced"):
            opt.step()
        opt.clear_grad()

    model, inp, _, _ = _tiny_batch(tiny_ckpt)
    with sharding_contract.installed():
        sharded, opt = sharding.shard_model_and_optimizer(model, _adamw(model), 2, get_env())
        sharded.train()
        before = _params(model)
        completion_logprobs(sharded, inp, 1.0).sum().backward()  # the shared-prefix pass
        opt.step()
        opt.clear_grad()
        completion_logprobs(sharded, inp, 1.0, shared_prefix=False).sum().backward()  # the plain forward
        opt.step()
    assert any(not np.array_equal(before[n], p.numpy()) for n, p in model.named_parameters())


class _TwoCalls(nn.Layer):
    """Calls one child twice in a forward, each call under recompute (the shared-prefix pass's pattern:
    every decoder layer runs for the prompt, then for the completions)."""

    def __init__(self):
        super().__init__()
        self.child = nn.Linear(8, 8)

    def forward(self, x, use_reentrant: bool):
        from paddle.distributed.fleet.utils import recompute

        h = recompute(self.child, x, use_reentrant=use_reentrant)
        return recompute(self.child, h, use_reentrant=use_reentrant)


def test_sharding_double_stage2_catches_gradients_completed_after_their_reduce():
    """Reentrant recompute runs one nested backward per recomputed call, so a layer called twice completes
    its gradient twice and stage 2 reduces only the first part; the decoder's non-reentrant recompute
    completes each gradient once per backward."""
    x = paddle.randn([2, 8])
    x.stop_gradient = False  # reentrant recompute gives the parameters no gradient when no input needs one
    with sharding_contract.installed():
        from paddle.distributed.sharding import group_sharded_parallel

        layer = _TwoCalls()
        sharded, opt, _ = group_sharded_parallel(layer, _adamw(layer), "os_g")
        sharded.train()
        sharded(x, use_reentrant=True).sum().backward()
        with pytest.raises(ShardingContractError, match="completed after the parameter's reduce"):
            opt.step()
        opt.clear_grad()
        sharded(x, use_reentrant=False).sum().backward()
        opt.step()


def test_shared_prefix_pass_with_recompute_is_fully_reduced_at_stage2(tiny_ckpt):
    """The decoder layers run twice in the shared-prefix pass (prompt, completions); with the decoder's
    non-reentrant recompute every gradient is still reduced once, after it is complete."""
    model, inp, _, _ = _tiny_batch(tiny_ckpt)
    with sharding_contract.installed():
        sharded, opt = sharding.shard_model_and_optimizer(model, _adamw(model), 2, get_env())
        sharded.train()
        model.model.recompute = True
        completion_logprobs(sharded, inp, 1.0).sum().backward()
        opt.step()


class _ReadsChildWeight(nn.Layer):
    def __init__(self, call_child: bool):
        super().__init__()
        self.child = nn.Linear(8, 8)
        self.call_child = call_child

    def forward(self, x):
        if self.call_child:
            return self.child(x)
        return paddle.matmul(x, self.child.weight)  # reads the child's weight without calling the child


def test_sharding_double_stage3_parameters_are_whole_only_inside_their_owner():
    """Stage 3: a partitioned parameter is readable only inside its owning sub-layer's forward (the
    pattern of PatchEmbed reading ``proj.weight``); small ones and excluded layers stay whole."""
    x = paddle.randn([2, 8])
    with sharding_contract.installed(segment_size=10):
        from paddle.distributed.sharding import group_sharded_parallel

        bad = _ReadsChildWeight(call_child=False)
        wrapper, _, _ = group_sharded_parallel(bad, _adamw(bad), "p_g_os")
        assert not bad.child.weight._is_initialized() and bad.child.bias._is_initialized()  # 64 > 10 >= 8
        with pytest.raises(ShardingContractError, match=r"inside the forward of '<the wrapped layer>' \(_ReadsChildWeight\)"
                                                        r"[\s\S]*child.weight \(owned by 'child'\)"):
            wrapper(x)
        good = _ReadsChildWeight(call_child=True)
        ref = good.child(x).numpy()
        wrapper, opt, _ = group_sharded_parallel(good, _adamw(good), "p_g_os")
        np.testing.assert_array_equal(wrapper(x).numpy(), ref)
        assert not good.child.weight._is_initialized()  # released after the owner's forward
        wrapper(x).sum().backward()
        opt.step()
        excluded = _ReadsChildWeight(call_child=False)
        wrapper, _, _ = group_sharded_parallel(excluded, _adamw(excluded), "p_g_os",
                                               exclude_layer=[id(excluded.child)])
        wrapper(x)


def test_sharding_double_stage3_get_all_parameters_skips_frozen_by_default():
    """R2: GroupShardedStage3.get_all_parameters(convert2cpu=False, with_freeze_param=False)."""
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8))
    model[0].weight.stop_gradient = True
    with sharding_contract.installed(segment_size=10):
        from paddle.distributed.sharding import group_sharded_parallel

        wrapper, _, _ = group_sharded_parallel(model, _adamw(model), "p_g_os")
        wrapper.get_all_parameters()
        assert model[1].weight._is_initialized() and not model[0].weight._is_initialized()
        wrapper.get_all_parameters(convert2cpu=True, with_freeze_param=True)
        assert model[0].weight._is_initialized()


# ----- the trainer under the double -----
@pytest.fixture(scope="module")
def stage0(tiny_ckpt, tmp_path_factory):
    return _params(_train(tiny_ckpt, tmp_path_factory.mktemp("stage0")).model)


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_sharded_trainer_step_equals_stage0(tiny_ckpt, tmp_path, stage0, stage):
    """One GRPO step (rollout, reference, loss, backward, clip, AdamW, save) at each stage through our
    real trainer code gives stage 0's weights: with one rank every reduction is the identity."""
    tr = _train(tiny_ckpt, tmp_path, stage)
    got = _params(tr.model)
    initial = _params(from_pretrained(tiny_ckpt))
    if stage == 3:  # everything but the LM head / tied embedding was partitioned, and gathered when used
        assert len(tr.sharding_wrapper.partitioned) == len(got) - 1 and tr.sharding_wrapper.gather_count > 0
        assert "policy.model.embed_tokens.weight" not in tr.sharding_wrapper.partitioned
    else:  # every trained parameter's gradient went through a reduce hook
        assert tr.sharding_wrapper.reduce_count == len(tr.params)
    assert max(float(np.abs(stage0[n] - initial[n]).max()) for n in stage0) > 1e-4  # the step moved weights
    for n in stage0:
        np.testing.assert_allclose(got[n], stage0[n], atol=1e-6, rtol=0, err_msg=f"stage {stage}: {n}")
    assert tr.history[0]["skipped"] == 0.0


@pytest.mark.parametrize("stage", [2, 3])
def test_sharded_gradient_checkpointing_equals_stage0(tiny_ckpt, tmp_path, stage0, stage):
    """Recompute re-runs each decoder layer inside the backward: stage 3 gathers its parameters again
    there, and stage 2 reduces each gradient once, complete."""
    tr = _train(tiny_ckpt, tmp_path, stage, gradient_checkpointing=True)
    got = _params(tr.model)
    for n in stage0:
        np.testing.assert_allclose(got[n], stage0[n], atol=1e-6, rtol=0, err_msg=n)


def test_sharded_stage3_save_writes_frozen_weights(tiny_ckpt, tmp_path):
    """R2: with freeze_vision the frozen (partitioned) vision weights are gathered for the save too."""
    tr = _train(tiny_ckpt, tmp_path, 3, freeze_vision=True)
    saved = _params(from_pretrained(str(tmp_path / "checkpoint-1" / "model")))
    initial = _params(from_pretrained(tiny_ckpt))
    live = _params(tr.model)
    for n in saved:
        np.testing.assert_array_equal(saved[n], live[n], err_msg=n)
        if n.startswith("visual."):
            np.testing.assert_array_equal(saved[n], initial[n], err_msg=n)


@pytest.mark.slow
def test_sharded_stage3_resume_continues_exactly(tiny_ckpt, tmp_path):
    """R3: the checkpoint's weights are loaded before partitioning (after it, they would not reach the slices)."""
    kw = dict(max_steps=2, save_steps=1)
    full = _params(_train(tiny_ckpt, tmp_path / "full", 3, **kw).model)
    with sharding_contract.installed(segment_size=TINY_SEGMENT):
        first = GRPOTrainer(_cfg(tiny_ckpt, tmp_path / "split", sharding_stage=3, **kw))
        first.train(num_steps=1)
    resumed = _train(tiny_ckpt, tmp_path / "split", 3, resume_from_checkpoint="latest", **kw)
    assert resumed.step == 2
    got = _params(resumed.model)
    for n in full:
        np.testing.assert_allclose(got[n], full[n], atol=1e-7, rtol=0, err_msg=n)


def test_generate_stop_condition_decides_when_decoding_ends(tiny_ckpt):
    """B13 (engine): with an eos, ``stop_condition(done)`` is asked after every step; the default is this
    process's ``done.all()``. ``pack_weights=False`` (stage 3) samples the same tokens."""
    model, _, proc, batch = _tiny_batch(tiny_ckpt)
    kw = dict(max_new_tokens=7, do_sample=True, num_return_sequences=2, eos_token_id=proc.eos_token_id,
              pad_token_id=proc.pad_token_id, seed=3)
    seen = []

    def never(done):
        seen.append(done)
        return False

    full = generate(model, batch, stop_condition=never, **kw)
    assert full.completion_ids.shape[1] == 7 and len(seen) == 7
    assert seen[0].dtype == paddle.bool and seen[0].shape == [4]
    assert generate(model, batch, stop_condition=lambda done: True, **kw).completion_ids.shape[1] == 1
    local = generate(model, batch, **kw)
    t = local.completion_ids.shape[1]
    np.testing.assert_array_equal(local.completion_ids.numpy(), full.completion_ids.numpy()[:, :t])
    unpacked = generate(model, batch, pack_weights=False, **kw)
    np.testing.assert_array_equal(unpacked.completion_ids.numpy(), local.completion_ids.numpy())
    np.testing.assert_allclose(unpacked.logprobs.numpy(), local.logprobs.numpy(), atol=1e-5)


def test_sharded_stage3_rollout_stop_is_collective(tiny_ckpt, tmp_path, monkeypatch):
    """B13: under stage 3 every decode step all-gathers parameters, so ranks must stop decoding together:
    the stop decision goes through an all-reduce. A peer that is still decoding keeps this rank going."""
    calls = []

    def peer_still_decoding(flag):
        calls.append(flag)
        return False

    monkeypatch.setattr(dist_pkg, "all_true_unguarded", peer_still_decoding)
    t = 6
    tr = _train(tiny_ckpt, tmp_path, 3, max_completion_length=t)
    assert len(calls) == t  # one collective decision per decode step of the step's one rollout
    assert all(mb.completion_mask.shape[1] == t for micro in tr._buffer for mb in micro)
    calls.clear()
    _train(tiny_ckpt, tmp_path / "stage2", 2, max_completion_length=t)
    assert calls == []  # stages 0-2 decode on whole local parameters: the local decision suffices


def test_sharded_nonfinite_loss_is_agreed_before_backward(tiny_ckpt, tmp_path, monkeypatch):
    """R1: a rank whose peer saw a non-finite loss must skip that micro-batch's backward too (its
    collectives would otherwise not match the peer's): finiteness is all-reduced before each backward."""
    real_all_true, real_loss = dist_pkg.all_true, trainer_mod.grpo_loss
    events = []

    def peer_nan_on_micro_1(flag, tag="all_true"):
        if "micro-batch" in tag:
            events.append(f"agree {tag.rsplit(' ', 1)[-1]}")
            return False if tag.endswith("micro-batch 1") else real_all_true(flag, tag)
        return real_all_true(flag, tag)

    def loss_with_probe(*args, **kwargs):
        loss, metrics = real_loss(*args, **kwargs)
        micro = sum(e.startswith("loss") for e in events)
        events.append(f"loss {micro}")
        loss.register_hook(lambda g: events.append(f"backward {micro}"))
        return loss, metrics

    monkeypatch.setattr(dist_pkg, "all_true", peer_nan_on_micro_1)
    monkeypatch.setattr(trainer_mod, "grpo_loss", loss_with_probe)
    tr = _train(tiny_ckpt, tmp_path, 2, gradient_accumulation_steps=2)
    assert events == ["loss 0", "agree 0", "backward 0", "loss 1", "agree 1"]
    assert tr.history[0]["skipped"] == 1.0 and tr.nonfinite_total == 1


@pytest.mark.slow
def test_distributed_all_true_unguarded_on_two_ranks(tmp_path):
    """The collective stop decision on a 2-process gloo job: True only if every rank's flag is True. Also:
    the process group's own timeout (PADDLE_PG_TIMEOUT, ms) follows sync_timeout (audit R6)."""
    from launching import check, launch

    script = tmp_path / "all_true.py"
    script.write_text(
        "from paddlemix_r1.distributed import all_true_unguarded, init_distributed\n"
        "env = init_distributed('cpu', 60.0)\n"
        "got = [all_true_unguarded(True), all_true_unguarded(env.rank == 0), all_true_unguarded(False)]\n"
        "assert got == [True, False, False], got\n"
        "import os; assert os.environ['PADDLE_PG_TIMEOUT'] == '120000', os.environ['PADDLE_PG_TIMEOUT']\n"
        "print('rank', env.rank, 'ok')\n")
    done = launch([str(script)], tmp_path / "log", timeout=120)
    check(done)
    assert all("ok" in done.worker_log(r) for r in (0, 1))
