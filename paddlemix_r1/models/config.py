"""Model configuration, read from a checkpoint's ``config.json`` in either published layout.

Layout A (the 2024/2025 checkpoints): text fields at the top level, ``rope_scaling`` with
``mrope_section``, ``rope_theta`` at the top level, ``vision_config.in_chans``.
Layout B (transformers 5): ``text_config`` with ``rope_parameters``, ``vision_config.in_channels``.

Text-only Qwen2 / Qwen2.5 causal LMs (``model_type`` "qwen2", ``Qwen2ForCausalLM``: Qwen2.5-Instruct,
DeepSeek-R1-Distill-Qwen) come flat in both layouts; layout A has a top-level ``rope_theta`` (and
``rope_scaling: null``), layout B ``rope_parameters``. Their sliding-window fields are read as
transformers' ``Qwen2Config`` reads them: ``sliding_window`` counts only with ``use_sliding_window``
(every published checkpoint has it off, so every layer attends fully); a config that does turn it on
is refused, since the decoder has no sliding-window attention.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass, field
from typing import Any

from paddlemix_r1.families import TEXT_FAMILIES, VISION_FAMILIES

"""Text-only causal LMs (no vision tower)."""
_ARCHITECTURES = {"Qwen2ForCausalLM": "qwen2", "Qwen2VLForConditionalGeneration": "qwen2_vl",
                  "Qwen2_5_VLForConditionalGeneration": "qwen2_5_vl"}
QWEN2_ROPE_THETA = 10000.0
"""transformers' default rope_theta for Qwen2 (every published Qwen2 config states its own)."""


@dataclass
class TextConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1000000.0
    mrope_section: list[int] = field(default_factory=lambda: [16, 24, 24])
    hidden_act: str = "silu"

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


@dataclass
class VisionConfig:
    depth: int
    embed_dim: int  # width of the vision blocks
    num_heads: int
    out_hidden_size: int  # merger output = decoder hidden size
    hidden_act: str
    intermediate_size: int  # MLP width of a vision block
    in_channels: int = 3
    patch_size: int = 14
    temporal_patch_size: int = 2
    spatial_merge_size: int = 2
    rope_theta: float = 10000.0
    # Qwen2.5-VL only
    window_size: int = 112
    fullatt_block_indexes: list[int] = field(default_factory=list)
    tokens_per_second: int = 2

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads


@dataclass
class ModelConfig:
    model_type: str  # "qwen2_vl" | "qwen2_5_vl" | "qwen2" (text only)
    text: TextConfig
    vision: VisionConfig | None  # None for a text-only causal LM
    image_token_id: int = 151655
    video_token_id: int = 151656
    vision_start_token_id: int = 151652
    vision_end_token_id: int = 151653
    tie_word_embeddings: bool = False
    raw: dict[str, Any] = field(default_factory=dict, repr=False)  # config.json as read, written back on save

    @property
    def is_text_only(self) -> bool:
        return self.vision is None

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config.json") -> ModelConfig:
        model_type = d.get("model_type")
        if model_type is None:  # some exports keep only the architectures list
            named = [_ARCHITECTURES[a] for a in d.get("architectures") or [] if a in _ARCHITECTURES]
            model_type = named[0] if named else None
        if model_type in TEXT_FAMILIES:
            return cls._text_only(d, model_type, source)
        if model_type not in VISION_FAMILIES:
            raise ValueError(f"{source}: model_type {model_type!r} is not one of {VISION_FAMILIES + TEXT_FAMILIES}")
        text_d = d.get("text_config") or d  # layout B nests text fields; layout A keeps them flat
        rope = text_d.get("rope_parameters") or text_d.get("rope_scaling") or d.get("rope_scaling") or {}

        def need(dct: dict, key: str, where: str) -> Any:
            if key not in dct:
                raise KeyError(f"{source}: missing field {where}{key}")
            return dct[key]

        tw = "text_config." if "text_config" in d else ""
        text = TextConfig(
            vocab_size=need(text_d, "vocab_size", tw),
            hidden_size=need(text_d, "hidden_size", tw),
            intermediate_size=need(text_d, "intermediate_size", tw),
            num_hidden_layers=need(text_d, "num_hidden_layers", tw),
            num_attention_heads=need(text_d, "num_attention_heads", tw),
            num_key_value_heads=text_d.get("num_key_value_heads") or text_d["num_attention_heads"],
            rms_norm_eps=text_d.get("rms_norm_eps", 1e-6),
            rope_theta=rope.get("rope_theta", text_d.get("rope_theta", d.get("rope_theta", 1000000.0))),
            mrope_section=list(rope.get("mrope_section", [16, 24, 24])),
            hidden_act=text_d.get("hidden_act", "silu"),
        )
        v = need(d, "vision_config", "")
        vrope = v.get("rope_parameters") or {}
        if model_type == "qwen2_vl":
            embed_dim = need(v, "embed_dim", "vision_config.")
            vision = VisionConfig(
                depth=need(v, "depth", "vision_config."),
                embed_dim=embed_dim,
                num_heads=need(v, "num_heads", "vision_config."),
                out_hidden_size=v.get("hidden_size", text.hidden_size),
                hidden_act=v.get("hidden_act", "quick_gelu"),
                intermediate_size=int(embed_dim * v.get("mlp_ratio", 4)),
                in_channels=v.get("in_channels", v.get("in_chans", 3)),
                patch_size=v.get("patch_size", 14),
                temporal_patch_size=v.get("temporal_patch_size", 2),
                spatial_merge_size=v.get("spatial_merge_size", 2),
                rope_theta=vrope.get("rope_theta", 10000.0),
            )
        else:
            vision = VisionConfig(
                depth=need(v, "depth", "vision_config."),
                embed_dim=need(v, "hidden_size", "vision_config."),
                num_heads=need(v, "num_heads", "vision_config."),
                out_hidden_size=v.get("out_hidden_size", text.hidden_size),
                hidden_act=v.get("hidden_act", "silu"),
                intermediate_size=need(v, "intermediate_size", "vision_config."),
                in_channels=v.get("in_channels", v.get("in_chans", 3)),
                patch_size=v.get("patch_size", 14),
                temporal_patch_size=v.get("temporal_patch_size", 2),
                spatial_merge_size=v.get("spatial_merge_size", 2),
                rope_theta=vrope.get("rope_theta", 10000.0),
                window_size=v.get("window_size", 112),
                fullatt_block_indexes=list(v.get("fullatt_block_indexes", [])),
                tokens_per_second=v.get("tokens_per_second", 2),
            )
        if sum(text.mrope_section) * 2 != text.head_dim:
            raise ValueError(
                f"{source}: mrope_section {text.mrope_section} sums to {sum(text.mrope_section)}, "
                f"head_dim/2 is {text.head_dim // 2}"
            )
        tie = d.get("tie_word_embeddings", text_d.get("tie_word_embeddings", False))
        return cls(
            model_type=model_type,
            text=text,
            vision=vision,
            image_token_id=d.get("image_token_id", 151655),
            video_token_id=d.get("video_token_id", 151656),
            vision_start_token_id=d.get("vision_start_token_id", 151652),
            vision_end_token_id=d.get("vision_end_token_id", 151653),
            tie_word_embeddings=bool(tie),
            raw=copy.deepcopy(d),
        )

    @classmethod
    def _text_only(cls, d: dict[str, Any], model_type: str, source: str) -> ModelConfig:
        """A Qwen2ForCausalLM config (module docstring): flat text fields, either rope layout."""

        def need(key: str) -> Any:
            if key not in d:
                raise KeyError(f"{source}: missing field {key}")
            return d[key]

        rope = d.get("rope_parameters") or d.get("rope_scaling") or {}
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        if rope_type != "default":
            raise ValueError(f"{source}: rope type {rope_type!r} is not supported (only the default rotary embedding)")
        layers = need("num_hidden_layers")
        if d.get("use_sliding_window") and d.get("sliding_window") is not None:
            sliding = [i for i in range(layers) if i >= d.get("max_window_layers", 28)]
            if sliding:
                raise ValueError(f"{source}: use_sliding_window is on, so layers {sliding[0]}..{sliding[-1]} use "
                                 "sliding-window attention, which this decoder does not implement")
        if "sliding_attention" in (d.get("layer_types") or []):
            raise ValueError(f"{source}: layer_types asks for sliding-window attention, which this decoder does not "
                             "implement")
        heads = need("num_attention_heads")
        hidden = need("hidden_size")
        if d.get("head_dim") not in (None, hidden // heads):
            raise ValueError(f"{source}: head_dim {d['head_dim']} differs from hidden_size / num_attention_heads "
                             f"= {hidden // heads}, which the decoder assumes")
        head_dim = hidden // heads
        text = TextConfig(
            vocab_size=need("vocab_size"),
            hidden_size=hidden,
            intermediate_size=need("intermediate_size"),
            num_hidden_layers=layers,
            num_attention_heads=heads,
            num_key_value_heads=d.get("num_key_value_heads") or heads,
            rms_norm_eps=d.get("rms_norm_eps", 1e-6),
            rope_theta=rope.get("rope_theta", d.get("rope_theta", QWEN2_ROPE_THETA)),
            # one section on the temporal axis: with the three position axes equal (text) this is 1-D RoPE
            mrope_section=[head_dim // 2],
            hidden_act=d.get("hidden_act", "silu"),
        )
        if text.hidden_act != "silu":
            raise ValueError(f"{source}: hidden_act {text.hidden_act!r} is not supported (Qwen2 uses silu)")
        return cls(model_type=model_type, text=text, vision=None,
                   tie_word_embeddings=bool(d.get("tie_word_embeddings", False)), raw=copy.deepcopy(d))

    @classmethod
    def from_file(cls, path: str) -> ModelConfig:
        with open(path, encoding="utf-8") as f:
            try:
                d = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: not valid JSON ({e})") from e
        return cls.from_dict(d, source=path)

    def to_dict(self) -> dict[str, Any]:
        """The config.json to write: the one read (any layout), or a layout-A dict for a model built here."""
        if self.raw:
            return copy.deepcopy(self.raw)
        t, v = self.text, self.vision
        if v is None:
            return self._text_only_dict()
        vision: dict[str, Any] = {
            "depth": v.depth,
            "num_heads": v.num_heads,
            "in_chans": v.in_channels,
            "patch_size": v.patch_size,
            "temporal_patch_size": v.temporal_patch_size,
            "spatial_merge_size": v.spatial_merge_size,
            "hidden_act": v.hidden_act,
        }
        if self.model_type == "qwen2_vl":
            if v.intermediate_size % v.embed_dim:
                raise ValueError(f"Qwen2-VL vision MLP width {v.intermediate_size} is not a multiple of {v.embed_dim}")
            vision.update(embed_dim=v.embed_dim, hidden_size=v.out_hidden_size,
                          mlp_ratio=v.intermediate_size // v.embed_dim)
            arch = "Qwen2VLForConditionalGeneration"
        else:
            vision.update(hidden_size=v.embed_dim, out_hidden_size=v.out_hidden_size,
                          intermediate_size=v.intermediate_size, window_size=v.window_size,
                          fullatt_block_indexes=v.fullatt_block_indexes, tokens_per_second=v.tokens_per_second)
            arch = "Qwen2_5_VLForConditionalGeneration"
        return {
            "architectures": [arch],
            "model_type": self.model_type,
            **self._decoder_fields(),
            "rope_scaling": {"type": "mrope", "mrope_section": list(t.mrope_section)},
            "tie_word_embeddings": self.tie_word_embeddings,
            "image_token_id": self.image_token_id,
            "video_token_id": self.video_token_id,
            "vision_start_token_id": self.vision_start_token_id,
            "vision_end_token_id": self.vision_end_token_id,
            "torch_dtype": "float32",
            "vision_config": vision,
        }

    def _decoder_fields(self) -> dict[str, Any]:
        """The decoder's config.json fields, the same in the VL and the text-only layouts."""
        t = self.text
        return {
            "vocab_size": t.vocab_size,
            "hidden_size": t.hidden_size,
            "intermediate_size": t.intermediate_size,
            "num_hidden_layers": t.num_hidden_layers,
            "num_attention_heads": t.num_attention_heads,
            "num_key_value_heads": t.num_key_value_heads,
            "rms_norm_eps": t.rms_norm_eps,
            "rope_theta": t.rope_theta,
            "hidden_act": t.hidden_act,
            "max_position_embeddings": 32768,
            "use_sliding_window": False,
        }

    def _text_only_dict(self) -> dict[str, Any]:
        """A Qwen2ForCausalLM config.json in the published layout (top-level rope_theta)."""
        t = self.text
        return {
            "architectures": ["Qwen2ForCausalLM"],
            "model_type": self.model_type,
            **self._decoder_fields(),
            "rope_scaling": None,
            "sliding_window": 32768,
            "max_window_layers": t.num_hidden_layers,
            "tie_word_embeddings": self.tie_word_embeddings,
            "torch_dtype": "float32",
        }

    def save(self, out_dir: str) -> None:
        with open(os.path.join(out_dir, "config.json"), "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=2)
