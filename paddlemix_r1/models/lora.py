"""LoRA adapters on the decoder's linear layers, in PEFT's formulation and file layout.

A targeted projection y = x W + b becomes

    y = x W + b + scaling * dropout(x) A B,    A (in, r), B (r, out), scaling = alpha / r

with A kaiming-uniform (a = sqrt(5), PEFT's default, bound 1/sqrt(in)) and B zero, so the model is
unchanged until B moves. Only the decoder's projections are targeted (the vision tower and merger are
excluded, as VLM-R1 does); after ``apply_lora`` only A and B are trainable.

The base model is not copied: ``adapters_disabled(model)`` switches the adapters off for a block (the
GRPO reference pass), and whatever reads weights outside ``forward`` (``generation.packing``, the HF
export) takes ``effective_weight()``, W + scaling * A B while the adapter is on.

Files: ``save_adapter`` writes PEFT's layout (adapter_config.json + adapter_model.safetensors) under the
module names of transformers 5's Qwen2-VL / Qwen2.5-VL classes, which ``peft.PeftModel.from_pretrained``
loads onto the transformers model; ``model.save_pretrained`` writes the merged HF checkpoint.

Not PaddleFormers' peft (1.2.0, measured with paddle 3.3.1): it needs transformers < 5.4 (our parity reference
is 5.x current), its LoRAModel reads PaddleFormers config fields our model has not (tensor_model_parallel_size,
_checkpoint_conversion_mapping), it swaps our ``Linear`` for its own ``F.linear`` layer, which
``generation.packing`` reads without the delta (packed vs unpacked logits differed by 5e-2), and it writes its
own files (lora_config.json, Paddle-layout keys ``...q_proj.lora_A`` (in, r)), not HF peft's.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass

import paddle
import paddle.nn as nn

from paddlemix_r1.models.decoder import Linear

DEFAULT_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
"""The decoder's projections (attention and MLP); all of them are the default, as in VLM-R1's LoRA runs."""

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"

# PEFT's key for our parameter "model.layers.N...": PeftModel -> base_model (LoraModel) -> model (the transformers
# ...ForConditionalGeneration) -> model.language_model (transformers >= 4.52 module tree; what peft 0.21 writes
# with transformers 5). The older tree (model.layers.N, no language_model) is accepted on load.
_PEFT_PREFIX = "base_model.model.model.language_model."
_PEFT_PREFIXES_READ = (_PEFT_PREFIX, "base_model.model.model.")
_DECODER_ADAPTER = re.compile(r"model\.layers\.\d+\.(?:self_attn|mlp)\.\w+\.lora_[AB]\.weight")


@dataclass(frozen=True)
class LoraConfig:
    r: int = 16
    """Rank of the update A B."""
    alpha: float = 32.0
    """The update is scaled by alpha / r."""
    dropout: float = 0.05
    """Dropout on the adapter's input (train mode only; the base projection never sees it)."""
    target_modules: tuple[str, ...] = DEFAULT_TARGET_MODULES
    """Names of the decoder projections that get an adapter (a subset of DEFAULT_TARGET_MODULES)."""

    def __post_init__(self) -> None:
        if not isinstance(self.r, int) or self.r < 1:
            raise ValueError(f"LoRA rank r must be an integer >= 1, got {self.r!r}")
        if not self.alpha > 0:
            raise ValueError(f"LoRA alpha must be > 0, got {self.alpha!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {self.dropout!r}")
        targets = tuple(self.target_modules)
        unknown = sorted(set(targets) - set(DEFAULT_TARGET_MODULES))
        if not targets or unknown:
            raise ValueError(f"LoRA target_modules must be a non-empty subset of {list(DEFAULT_TARGET_MODULES)} "
                             f"(the decoder's projections; the vision tower is never adapted), got {list(targets)}")
        object.__setattr__(self, "target_modules", tuple(t for t in DEFAULT_TARGET_MODULES if t in targets))

    @property
    def scaling(self) -> float:
        return self.alpha / self.r


def _factor(in_features: int, out_features: int, dtype, initializer: nn.initializer.Initializer) -> Linear:
    """One LoRA factor as a bias-free ``Linear`` (weight (in, out)), so it is exported like every linear weight."""
    layer = Linear(in_features, out_features, weight_attr=paddle.ParamAttr(initializer=initializer), bias_attr=False)
    if layer.weight.dtype != dtype:
        layer.to(dtype=dtype)
    return layer


class LoraLinear(Linear):
    """A decoder ``Linear`` with a LoRA adapter. It takes over the base layer's own weight and bias
    parameters (same objects, same names), so checkpoints and optimizer state keep their keys."""

    def __init__(self, base: Linear, config: LoraConfig):
        nn.Layer.__init__(self)
        self._dtype, self.name = base._dtype, base.name
        self._weight_attr, self._bias_attr = base._weight_attr, base._bias_attr
        self.weight, self.bias = base.weight, base.bias
        in_features, out_features = base.weight.shape
        kaiming = nn.initializer.KaimingUniform(negative_slope=math.sqrt(5), nonlinearity="leaky_relu")
        self.lora_A = _factor(in_features, config.r, base.weight.dtype, kaiming)  # (in, r); fan_in = in, as PEFT
        self.lora_B = _factor(config.r, out_features, base.weight.dtype, nn.initializer.Constant(0.0))  # (r, out)
        self.lora_dropout = nn.Dropout(config.dropout) if config.dropout > 0 else None
        self.config = config
        self.scaling = config.scaling
        self.adapter_enabled = True

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        y = super().forward(x)  # (..., out)
        if not self.adapter_enabled:
            return y
        h = x if self.lora_dropout is None else self.lora_dropout(x)
        return y + self.lora_B(self.lora_A(h)) * self.scaling  # (..., out)

    def effective_weight(self) -> paddle.Tensor:
        """W + scaling * A B (in, out) while the adapter is on, summed in fp32 and rounded once to W's dtype."""
        if not self.adapter_enabled:
            return self.weight
        w = self.weight.astype("float32")
        a, b = self.lora_A.weight.astype("float32"), self.lora_B.weight.astype("float32")
        return (w + paddle.matmul(a, b) * self.scaling).astype(self.weight.dtype)  # one rounding in low precision

    def extra_repr(self) -> str:
        c = self.config
        return f"{super().extra_repr()}, r={c.r}, alpha={c.alpha}, dropout={c.dropout}, enabled={self.adapter_enabled}"


def lora_layers(model: nn.Layer) -> dict[str, LoraLinear]:
    """Every LoRA layer of ``model`` by its name (e.g. "model.layers.0.self_attn.q_proj")."""
    return {name: layer for name, layer in model.named_sublayers() if isinstance(layer, LoraLinear)}


def adapter_parameters(model: nn.Layer) -> dict[str, paddle.Tensor]:
    """The adapter parameters by name ("model.layers.0.self_attn.q_proj.lora_A.weight"), in model order."""
    out = {}
    for name, layer in lora_layers(model).items():
        out[f"{name}.lora_A.weight"] = layer.lora_A.weight
        out[f"{name}.lora_B.weight"] = layer.lora_B.weight
    return out


def apply_lora(model: nn.Layer, config: LoraConfig) -> list[str]:
    """Give every targeted projection of ``model.model`` (the decoder) an adapter, in place, and make the
    adapter parameters the only trainable ones. Returns the adapted layers' names.

    Raises if the model already has adapters or a target name matches no decoder layer."""
    if lora_layers(model):
        raise ValueError("the model already has LoRA adapters; apply_lora runs once per model")
    decoder = model.model
    found: dict[str, list[tuple[nn.Layer, str, Linear]]] = {t: [] for t in config.target_modules}
    for name, layer in decoder.named_sublayers():
        leaf = name.rsplit(".", 1)[-1]
        if leaf in found and isinstance(layer, Linear):
            parent = decoder
            for part in name.split(".")[:-1]:
                parent = getattr(parent, part)
            found[leaf].append((parent, leaf, layer))
    missing = [t for t, hits in found.items() if not hits]
    if missing:
        raise ValueError(f"LoRA target_modules {missing} match no linear layer of the decoder")
    for p in model.parameters():
        p.stop_gradient = True
    for hits in found.values():
        for parent, leaf, layer in hits:
            adapted = LoraLinear(layer, config)
            if not layer.training:  # a new layer starts in train mode (its dropout on): follow the model's mode
                adapted.eval()
            setattr(parent, leaf, adapted)
    for p in adapter_parameters(model).values():
        p.stop_gradient = False
    return list(lora_layers(model))


def model_lora_config(model: nn.Layer) -> LoraConfig:
    """The LoraConfig the model's adapters were built with (one config per model)."""
    configs = {layer.config for layer in lora_layers(model).values()}
    if len(configs) != 1:
        raise ValueError(f"expected the adapters of one LoraConfig, found {len(configs)}")
    return configs.pop()


@contextlib.contextmanager
def adapters_disabled(model: nn.Layer) -> Iterator[nn.Layer]:
    """Inside the block the model computes as its base model (every adapter off); restored on exit.
    Raises if the model has no adapters (a "reference" that silently equals the policy would be wrong)."""
    layers = list(lora_layers(model).values())
    if not layers:
        raise ValueError("adapters_disabled: the model has no LoRA adapters")
    before = [layer.adapter_enabled for layer in layers]
    for layer in layers:
        layer.adapter_enabled = False
    try:
        yield model
    finally:
        for layer, enabled in zip(layers, before):
            layer.adapter_enabled = enabled


# ----- PEFT's file layout -----
def peft_key(name: str) -> str:
    """Our adapter parameter name -> the key HF peft writes for it."""
    if not name.startswith("model."):
        raise ValueError(f"{name!r} is not a decoder parameter")
    return _PEFT_PREFIX + name[len("model."):]


def from_peft_key(key: str) -> str:
    """A PEFT adapter key -> our parameter name; only the decoder layers' lora_A / lora_B weights map."""
    for prefix in _PEFT_PREFIXES_READ:
        if key.startswith(prefix):
            name = "model." + key[len(prefix):]
            if _DECODER_ADAPTER.fullmatch(name):
                return name
    raise KeyError(f"adapter key {key!r} is not a lora_A/lora_B weight of a decoder layer (under "
                   f"{' or '.join(_PEFT_PREFIXES_READ)}layers.N); vision, lm_head or other adapters do not load")


def peft_target_regex(target_modules: tuple[str, ...]) -> str:
    """PEFT's ``target_modules`` as a regex (peft full-matches a string against module names): the decoder's
    projections only. A list of bare names would also match the Qwen2.5-VL vision MLP (gate/up/down_proj)."""
    names = "|".join(target_modules)
    return rf"model\.(?:language_model\.)?layers\.\d+\.(?:self_attn|mlp)\.(?:{names})"


def peft_adapter_config(config: LoraConfig, base_model_name_or_path: str | None) -> dict:
    return {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model_name_or_path,
        "r": config.r,
        "lora_alpha": config.alpha,
        "lora_dropout": config.dropout,
        "target_modules": peft_target_regex(config.target_modules),
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,
        "use_dora": False,
        "init_lora_weights": True,
        "inference_mode": True,
        "modules_to_save": None,
        "layers_to_transform": None,
        "layers_pattern": None,
        "rank_pattern": {},
        "alpha_pattern": {},
        "revision": None,
    }


def _config_from_peft(d: dict, targets: tuple[str, ...], path: str) -> LoraConfig:
    if d.get("peft_type") != "LORA":
        raise ValueError(f"{path}: peft_type {d.get('peft_type')!r}, only LORA adapters load")
    for key in ("use_rslora", "use_dora", "fan_in_fan_out"):
        if d.get(key):
            raise ValueError(f"{path}: {key}=true is not supported")
    for key in ("rank_pattern", "alpha_pattern"):
        if d.get(key):
            raise ValueError(f"{path}: per-module {key} is not supported")
    if d.get("bias", "none") != "none" or d.get("modules_to_save"):
        raise ValueError(f"{path}: trained biases / modules_to_save are not supported (adapters only)")
    return LoraConfig(r=int(d["r"]), alpha=float(d["lora_alpha"]), dropout=float(d.get("lora_dropout", 0.0)),
                      target_modules=targets)


def save_adapter(model: nn.Layer, out_dir: str, base_model_name_or_path: str | None = None) -> None:
    """Write the adapters in HF peft's layout: adapter_config.json + adapter_model.safetensors
    (keys ``base_model.model.model.language_model.layers.N.<self_attn|mlp>.<proj>.lora_<A|B>.weight``,
    torch layout: lora_A (r, in), lora_B (out, r))."""
    from safetensors.paddle import save_file

    from paddlemix_r1.models.checkpoint import to_hf_layout

    params = adapter_parameters(model)
    if not params:
        raise ValueError("save_adapter: the model has no LoRA adapters")
    tensors = {peft_key(k): t for k, t in to_hf_layout(model, params).items()}
    os.makedirs(out_dir, exist_ok=True)
    save_file(tensors, os.path.join(out_dir, ADAPTER_WEIGHTS), metadata={"format": "pt"})
    with open(os.path.join(out_dir, ADAPTER_CONFIG), "w", encoding="utf-8") as f:
        json.dump(peft_adapter_config(model_lora_config(model), base_model_name_or_path), f, indent=2)


def load_adapter(model: nn.Layer, path: str) -> None:
    """Load a PEFT LoRA adapter directory (ours, or HF peft's for these models) into ``model``.

    A model without adapters gets them (``apply_lora`` with the file's rank, alpha, dropout and the
    projections its keys name); a model with adapters must have the same rank and scaling. Strict: every
    adapter parameter must be in the file and every key of the file must be one of them."""
    from safetensors import safe_open

    from paddlemix_r1._runtime import stride_kernels
    from paddlemix_r1.models.checkpoint import from_hf_layout

    cfg_file, weights = os.path.join(path, ADAPTER_CONFIG), os.path.join(path, ADAPTER_WEIGHTS)
    for f in (cfg_file, weights):
        if not os.path.exists(f):
            raise FileNotFoundError(f"{path}: no {os.path.basename(f)}")
    with open(cfg_file, encoding="utf-8") as f:
        peft_cfg = json.load(f)
    with stride_kernels(), safe_open(weights, framework="paddle") as f:
        state = {}
        for key in f.keys():
            state[from_peft_key(key)] = f.get_tensor(key)
    targets = tuple(sorted({k[: -len(".lora_A.weight")].rsplit(".", 1)[-1] for k in state}))
    file_cfg = _config_from_peft(peft_cfg, targets, path)
    if not lora_layers(model):
        apply_lora(model, file_cfg)
    else:
        ours = model_lora_config(model)
        if (ours.r, ours.scaling) != (file_cfg.r, file_cfg.scaling):
            raise ValueError(f"{path}: adapter r={file_cfg.r}, alpha={file_cfg.alpha}; the model's adapters have "
                             f"r={ours.r}, alpha={ours.alpha}")
    params = adapter_parameters(model)
    unexpected = sorted(set(state) - set(params))
    missing = sorted(set(params) - set(state))
    if unexpected or missing:
        raise KeyError(f"{path}: adapter keys do not match the model's adapters: unexpected {unexpected[:5]}, "
                       f"missing {missing[:5]} ({len(unexpected)} / {len(missing)} in all)")
    for name, t in from_hf_layout(model, state).items():
        p = params[name]
        if list(t.shape) != list(p.shape):
            raise ValueError(f"{path}: {name} has shape {list(t.shape)}, the model's adapter {list(p.shape)}")
        p.set_value(t.astype(p.dtype))
