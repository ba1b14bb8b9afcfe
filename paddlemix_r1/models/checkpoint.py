"""Hugging Face checkpoints: read config.json + (sharded) safetensors without torch, write them back.

Key layouts accepted on load:
  published:        model.layers.N..., model.embed_tokens, model.norm, visual.*, lm_head.weight
  transformers 5:   model.language_model.layers.N..., model.visual.*, lm_head.weight
Our parameter names are the published ones. Saving writes the published layout, which every
transformers release since Qwen2-VL (and vLLM) loads.

Paddle's nn.Linear stores (in, out), HF (out, in): ``_is_linear_weight`` decides, and this file is
the only place that transposes.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import paddle
import paddle.nn as nn
from safetensors import SafetensorError, safe_open
from safetensors.paddle import save_file

from paddlemix_r1._runtime import stride_kernels
from paddlemix_r1.models.config import ModelConfig
from paddlemix_r1.models.decoder import Linear
from paddlemix_r1.models.lora import adapter_parameters
from paddlemix_r1.models.registry import MODEL_CLASSES

_HF5_PREFIXES = (("model.language_model.", "model."), ("model.visual.", "visual."))
_DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
           "float16": "float16", "fp16": "float16"}


def to_our_key(key: str) -> str:
    for src, dst in _HF5_PREFIXES:
        if key.startswith(src):
            return dst + key[len(src):]
    return key


def _linear_weight_names(model: nn.Layer) -> set[str]:
    return {f"{name}.weight" if name else "weight" for name, layer in model.named_sublayers() if isinstance(layer, nn.Linear)}


def _weight_files(path: str) -> list[str]:
    """The safetensors files of the checkpoint at ``path``; errors name the index or the missing shard."""
    index = os.path.join(path, "model.safetensors.index.json")
    if os.path.exists(index):
        try:
            with open(index, encoding="utf-8") as f:
                files = sorted(set(json.load(f)["weight_map"].values()))
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"{index}: not a safetensors index with a 'weight_map' ({type(e).__name__}: {e})") from e
        missing = [name for name in files if not os.path.isfile(os.path.join(path, name))]
        if missing:
            raise FileNotFoundError(f"{index} lists {len(missing)} missing shard(s): {', '.join(missing[:5])}")
        return [os.path.join(path, name) for name in files]
    single = os.path.join(path, "model.safetensors")
    if os.path.exists(single):
        return [single]
    raise FileNotFoundError(f"{path}: no model.safetensors or model.safetensors.index.json")


def load_state(model: nn.Layer, path: str) -> None:
    """Copy every tensor of the checkpoint at ``path`` into ``model``; strict about names and shapes.
    A truncated or corrupt safetensors file is a ValueError naming it."""
    params = dict(model.named_parameters())
    linear = _linear_weight_names(model)
    seen: set[str] = set()
    tied = getattr(model.config, "tie_word_embeddings", False)
    for file in _weight_files(path):
        try:
            with stride_kernels(), safe_open(file, framework="paddle") as f:
                for key in f.keys():
                    ours = to_our_key(key)
                    if tied and ours == "lm_head.weight":
                        continue  # tied checkpoints may still carry a copy; the embedding is the source
                    if ours not in params:
                        raise KeyError(f"{file}: unexpected key {key!r} (no parameter {ours!r} in the model)")
                    t = f.get_tensor(key)
                    if ours in linear:
                        t = t.T
                    p = params[ours]
                    if list(t.shape) != list(p.shape):
                        raise ValueError(
                            f"{file}: key {key!r} has shape {list(t.shape)} (after layout conversion), "
                            f"model parameter {ours!r} expects {list(p.shape)}"
                        )
                    p.set_value(t.astype(p.dtype))
                    seen.add(ours)
        except SafetensorError as e:  # the library's message names no file ("invalid header length", ...)
            raise ValueError(f"{file}: truncated or corrupt safetensors file ({e})") from e
    expected = set(params) - ({"lm_head.weight"} if tied else set())
    missing = sorted(expected - seen)
    if missing:
        shapes = ", ".join(f"{k} {list(params[k].shape)}" for k in missing[:10])
        raise KeyError(f"{path}: checkpoint is missing {len(missing)} parameter(s): {shapes}")


def from_pretrained(path: str, dtype: str = "float32") -> nn.Layer:
    """Load a checkpoint directory (config.json + safetensors): Qwen2-VL, Qwen2.5-VL, or a text-only Qwen2 /
    Qwen2.5 causal LM (``Qwen2ForCausalLM``), by config.json's ``model_type`` (else its ``architectures``)."""
    if dtype not in _DTYPES:
        raise ValueError(f"dtype {dtype!r} not one of {sorted(_DTYPES)}")
    config = ModelConfig.from_file(os.path.join(path, "config.json"))
    model = MODEL_CLASSES[config.model_type](config)
    load_state(model, path)
    if _DTYPES[dtype] != "float32":
        cast_parameters(model, _DTYPES[dtype])
    model.eval()
    return model


def cast_parameters(model: nn.Layer, dtype: str) -> None:
    """Cast the parameters to ``dtype``; buffers (the rotary ``inv_freq`` tables) stay as they are.

    ``Layer.to(dtype=...)`` casts every buffer too (nn/layer/layers.py ``_apply``): a bf16 ``inv_freq`` is off
    by up to 1.2e-3 on Qwen2.5's text frequencies, a 1.2 rad phase error at position 1000, and every M-RoPE and
    vision rotary table would silently carry it. HF computes and keeps them in fp32.
    """
    kept = {id(layer): {k: b.clone() for k, b in layer._buffers.items() if b is not None}
            for layer in model.sublayers(include_self=True)}
    model.to(dtype=dtype)
    for layer in model.sublayers(include_self=True):
        for name, buf in kept[id(layer)].items():
            layer._buffers[name] = buf  # the original tensor, not the cast one (``to`` cast it in place)


def to_hf_layout(model: nn.Layer, tensors: dict[str, paddle.Tensor]) -> dict[str, paddle.Tensor]:
    """Our tensors (named as ``model``'s parameters) in HF layout, on the host: linear weights transposed."""
    linear = _linear_weight_names(model)
    return {name: _host_hf(t, name in linear) for name, t in tensors.items()}


def _host_hf(t: paddle.Tensor, is_linear: bool) -> paddle.Tensor:
    t = t.detach()
    if not t.place.is_cpu_place():
        t = t.cpu()  # one tensor at a time to host: no device copy of every transposed weight at once
    return (t.T if is_linear else t).contiguous()


def from_hf_layout(model: nn.Layer, tensors: dict[str, paddle.Tensor]) -> dict[str, paddle.Tensor]:
    """HF-layout tensors, named as ``model``'s parameters, in our layout (linear weights transposed)."""
    linear = _linear_weight_names(model)
    return {name: (t.T if name in linear else t) for name, t in tensors.items()}


def _hf_state(model: nn.Layer) -> dict[str, paddle.Tensor]:
    """The HF checkpoint's tensors. A linear layer contributes the weight it applies (``effective_weight``):
    with LoRA adapters on, the merged W + scaling * A B; the adapter factors themselves are not HF weights
    (they go to a PEFT adapter directory: ``lora.save_adapter``)."""
    tied = model.config.tie_word_embeddings
    linear = _linear_weight_names(model)
    applied = {f"{name}.weight": layer for name, layer in model.named_sublayers() if isinstance(layer, Linear)}
    adapters = set(adapter_parameters(model))
    out = {}
    for name, p in model.named_parameters():
        if (tied and name == "lm_head.weight") or name in adapters:
            continue
        out[name] = _host_hf(applied[name].effective_weight() if name in applied else p, name in linear)
    return out


def save_pretrained(model: nn.Layer, out_dir: str, max_shard_bytes: int = 4 << 30) -> None:
    """Write config.json and safetensors (sharded above ``max_shard_bytes``) atomically:
    everything goes to a temporary sibling directory that replaces ``out_dir`` in one rename.
    Files already in ``out_dir`` that are not weights or config (tokenizer, processor) are kept."""
    out_dir = os.path.abspath(out_dir)
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-save-", dir=parent)
    try:
        if os.path.isdir(out_dir):
            for name in os.listdir(out_dir):
                if not (name.endswith(".safetensors") or name in ("config.json", "model.safetensors.index.json")):
                    src = os.path.join(out_dir, name)
                    (shutil.copytree if os.path.isdir(src) else shutil.copy2)(src, os.path.join(tmp, name))
        state = _hf_state(model)
        shards: list[dict[str, paddle.Tensor]] = [{}]
        size = 0
        for k, t in state.items():
            nbytes = t.numel().item() * t.element_size()
            if shards[-1] and size + nbytes > max_shard_bytes:
                shards.append({})
                size = 0
            shards[-1][k] = t
            size += nbytes
        meta = {"format": "pt"}
        if len(shards) == 1:
            save_file(shards[0], os.path.join(tmp, "model.safetensors"), metadata=meta)
        else:
            weight_map, total = {}, 0
            for i, shard in enumerate(shards):
                fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
                save_file(shard, os.path.join(tmp, fname), metadata=meta)
                for k, t in shard.items():
                    weight_map[k] = fname
                    total += t.numel().item() * t.element_size()
            with open(os.path.join(tmp, "model.safetensors.index.json"), "w", encoding="utf-8") as f:
                json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
        cfg = model.config.to_dict()
        dtype = str(next(iter(state.values())).dtype).replace("paddle.", "")
        cfg["torch_dtype"] = dtype
        if "dtype" in cfg:
            cfg["dtype"] = dtype
        with open(os.path.join(tmp, "config.json"), "w", encoding="utf-8") as f:
            json.dump(cfg, f, indent=2)
        old = None
        if os.path.exists(out_dir):
            old = out_dir + ".old-" + os.path.basename(tmp)
            os.rename(out_dir, old)
        os.rename(tmp, out_dir)
        if old:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
