"""Training checkpoints: policy in HF layout, optimizer, scheduler, sampler, RNG and step, written
atomically (everything goes to a temporary directory that is renamed into place), last k kept."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from typing import Any

import paddle

_CKPT = re.compile(r"^checkpoint-(\d+)$")
PROCESSOR_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.json", "chat_template.jinja",
                   "preprocessor_config.json", "special_tokens_map.json", "generation_config.json")


def list_checkpoints(output_dir: str) -> list[str]:
    """Complete checkpoints in ``output_dir``, oldest first."""
    if not os.path.isdir(output_dir):
        return []
    found = [(int(m.group(1)), name) for name in os.listdir(output_dir) if (m := _CKPT.match(name))
             and os.path.exists(os.path.join(output_dir, name, "trainer_state.json"))]
    return [os.path.join(output_dir, name) for _, name in sorted(found)]


def resolve(resume: str | None, output_dir: str) -> str | None:
    if resume is None:
        return None
    if resume == "latest":
        ckpts = list_checkpoints(output_dir)
        return ckpts[-1] if ckpts else None
    if not os.path.exists(os.path.join(resume, "trainer_state.json")):
        raise FileNotFoundError(f"resume_from_checkpoint={resume!r}: no trainer_state.json there")
    return resume


def _optimizer_state(optimizer: paddle.optimizer.Optimizer, names: dict[str, str]) -> dict[str, Any]:
    """Optimizer state keyed by structured parameter names (Paddle keys it by generated names,
    which depend on construction order in the process)."""
    state = optimizer.state_dict()
    out = {}
    for key, value in state.items():
        for pname, structured in names.items():
            if key.startswith(pname + "_"):
                key = structured + key[len(pname):]
                break
        out[key] = value
    return out


def _rename_back(state: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    back = {v: k for k, v in names.items()}
    out = {}
    for key, value in state.items():
        for structured, pname in sorted(back.items(), key=lambda kv: -len(kv[0])):
            if key.startswith(structured + "_"):
                key = pname + key[len(structured):]
                break
        out[key] = value
    return out


def save_checkpoint(output_dir: str, step: int, model, optimizer, scheduler, trainer_state: dict[str, Any],
                    processor_dir: str | None, keep: int) -> str:
    """Write checkpoint-{step} atomically and drop all but the newest ``keep``."""
    final = os.path.join(output_dir, f"checkpoint-{step}")
    os.makedirs(output_dir, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".tmp-checkpoint-{step}-", dir=output_dir)
    try:
        model.save_pretrained(os.path.join(tmp, "model"))
        if processor_dir:
            for name in PROCESSOR_FILES:
                src = os.path.join(processor_dir, name)
                if os.path.exists(src):
                    shutil.copy2(src, os.path.join(tmp, "model", name))
        names = {p.name: n for n, p in model.named_parameters()}
        paddle.save(_optimizer_state(optimizer, names), os.path.join(tmp, "optimizer.pdopt"))
        paddle.save(scheduler.state_dict(), os.path.join(tmp, "scheduler.pdopt"))
        # Sampling seeds derive from (seed, step); Paddle's own generator is saved for anything else.
        paddle.save({"paddle": paddle.get_rng_state()}, os.path.join(tmp, "rng.pdopt"))
        with open(os.path.join(tmp, "trainer_state.json"), "w", encoding="utf-8") as f:
            json.dump({**trainer_state, "step": step}, f, indent=2)
        if os.path.exists(final):
            shutil.rmtree(final)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in list_checkpoints(output_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old)
    return final


def load_checkpoint(path: str, model, optimizer, scheduler) -> dict[str, Any]:
    """Restore weights, optimizer, scheduler and Paddle's RNG; return the trainer state dict."""
    from paddlemix_r1.models.checkpoint import load_state

    load_state(model, os.path.join(path, "model"))
    names = {p.name: n for n, p in model.named_parameters()}
    optimizer.set_state_dict(_rename_back(paddle.load(os.path.join(path, "optimizer.pdopt")), names))
    scheduler.set_state_dict(paddle.load(os.path.join(path, "scheduler.pdopt")))
    paddle.set_rng_state(paddle.load(os.path.join(path, "rng.pdopt"))["paddle"])
    with open(os.path.join(path, "trainer_state.json"), encoding="utf-8") as f:
        return json.load(f)
