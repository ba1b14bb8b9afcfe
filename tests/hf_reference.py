"""Reference side of the parity tests: tiny random transformers checkpoints and their fp32 outputs.

Only tests import this module (torch and transformers are test dependencies). Unlike the TRL reference
(tests/grpo/trl_reference.py, a subprocess), this one runs in the test process: a checkpoint is loaded once
and compared in place, and no Paddle-side import changes what transformers computes here. The library itself
never imports torch (tests/test_install.py checks it).
"""

from __future__ import annotations

import json
import os

import numpy as np

VOCAB = 320
IMAGE_TOKEN, VIDEO_TOKEN, VISION_START, VISION_END = 300, 301, 302, 303


def tiny_config_dict(family: str, tie: bool = False) -> dict:
    text = dict(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=112, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, rms_norm_eps=1e-6, hidden_act="silu",
        rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 10000.0},
    )
    if family == "qwen2_vl":
        vision = dict(depth=2, embed_dim=32, hidden_size=64, num_heads=2, mlp_ratio=2, in_channels=3,
                      patch_size=14, spatial_merge_size=2, temporal_patch_size=2)
    else:
        vision = dict(depth=3, hidden_size=32, out_hidden_size=64, intermediate_size=48, num_heads=2,
                      in_channels=3, patch_size=14, spatial_merge_size=2, temporal_patch_size=2,
                      window_size=56, fullatt_block_indexes=[1], tokens_per_second=2, hidden_act="silu")
    return dict(
        model_type=family, text_config=text, vision_config=vision, image_token_id=IMAGE_TOKEN,
        video_token_id=VIDEO_TOKEN, vision_start_token_id=VISION_START, vision_end_token_id=VISION_END,
        tie_word_embeddings=tie,
    )


def hf_classes(family: str):
    import transformers

    if family == "qwen2_vl":
        return transformers.Qwen2VLConfig, transformers.Qwen2VLForConditionalGeneration
    return transformers.Qwen2_5_VLConfig, transformers.Qwen2_5_VLForConditionalGeneration


def build_hf_checkpoint(out_dir: str, family: str, tie: bool = False, seed: int = 0, std: float = 0.2) -> str:
    """Save a tiny random transformers model to ``out_dir`` (transformers-5 layout)."""
    import torch

    cfg_cls, model_cls = hf_classes(family)
    torch.manual_seed(seed)
    config = cfg_cls(**tiny_config_dict(family, tie))
    model = model_cls(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2 or "bias" in name:  # larger than the default init so errors are visible
                p.normal_(0.0, std)
    model.save_pretrained(out_dir)
    return out_dir


def to_published_layout(ckpt_dir: str) -> None:
    """Rewrite a transformers-5 config.json into the 2024/2025 published layout (flat text fields,
    top-level rope_scaling, vision_config.in_chans) in place."""
    path = os.path.join(ckpt_dir, "config.json")
    with open(path) as f:
        d = json.load(f)
    text = d.pop("text_config")
    rope = text.pop("rope_parameters")
    for k in ("model_type", "architectures", "dtype", "layer_types", "bos_token_id", "eos_token_id", "pad_token_id"):
        text.pop(k, None)
    d.update(text)
    d["rope_theta"] = rope["rope_theta"]
    d["rope_scaling"] = {"type": "mrope", "mrope_section": rope["mrope_section"]}
    v = d["vision_config"]
    v["in_chans"] = v.pop("in_channels")
    v.pop("rope_parameters", None)
    with open(path, "w") as f:
        json.dump(d, f, indent=2)


class HFModel:
    """A transformers checkpoint loaded once, run in fp32 on numpy inputs."""

    def __init__(self, ckpt_dir: str, family: str):
        import torch

        _, model_cls = hf_classes(family)
        self.model = model_cls.from_pretrained(ckpt_dir, dtype=torch.float32).eval()

    def _kwargs(self, batch: dict) -> dict:
        import torch

        kw = {k: torch.from_numpy(np.asarray(v)) for k, v in batch.items() if v is not None}
        ids = kw["input_ids"]
        mm = torch.zeros_like(ids, dtype=torch.int32)  # transformers 5 reads modality per token from here
        mm[ids == self.model.config.image_token_id] = 1
        mm[ids == self.model.config.video_token_id] = 2
        kw["mm_token_type_ids"] = mm
        return kw

    def logits(self, batch: dict) -> np.ndarray:
        import torch

        with torch.no_grad():
            return self.model(**self._kwargs(batch)).logits.float().numpy()

    def rope_index(self, batch: dict) -> tuple[np.ndarray, np.ndarray]:
        kw = self._kwargs(batch)
        kw.pop("pixel_values", None)
        kw.pop("pixel_values_videos", None)
        pos, deltas = self.model.model.get_rope_index(**kw)
        return pos.numpy(), deltas.numpy().reshape(-1)


def hf_logits(ckpt_dir: str, family: str, batch: dict) -> np.ndarray:
    return HFModel(ckpt_dir, family).logits(batch)


# ----- LoRA: merged checkpoints and PEFT adapters, run in a subprocess (tests/models/test_lora.py) -----
def lora_reference(cases: list[dict]) -> dict[str, np.ndarray]:
    """For each case {name, family, base, merged, adapter, batch (npz path)}: the fp32 logits of the merged
    checkpoint (``<name>/merged``) and of the base checkpoint with the adapter loaded by HF peft
    (``<name>/peft``), plus the names of the modules peft adapted (``<name>/adapted``)."""
    import warnings

    from peft import PeftModel

    out = {}
    for case in cases:
        batch = dict(np.load(case["batch"]))
        name, family = case["name"], case["family"]
        out[f"{name}/merged"] = HFModel(case["merged"], family).logits(batch)
        hf = HFModel(case["base"], family)
        with warnings.catch_warnings():
            # peft only warns when adapter keys do not match the model's modules (the adapter then stays at init)
            warnings.filterwarnings("error", message=".*(missing|unexpected) adapter keys.*")
            hf.model = PeftModel.from_pretrained(hf.model, case["adapter"]).eval()
        out[f"{name}/peft"] = hf.logits(batch)
        out[f"{name}/adapted"] = np.array(sorted(n for n, _ in hf.model.named_modules() if n.endswith(".lora_A")))
    return out


if __name__ == "__main__":
    import sys

    # python hf_reference.py lora <cases.json> <out.npz>
    command, cases_path, out_path = sys.argv[1:]
    if command != "lora":
        raise SystemExit(f"unknown command {command!r}")
    with open(cases_path) as f:
        np.savez(out_path, **lora_reference(json.load(f)))
