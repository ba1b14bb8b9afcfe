"""Reference side of the text-only Qwen2 parity tests, run in a subprocess (torch stays out of the Paddle
test process): tiny random transformers ``Qwen2ForCausalLM`` checkpoints, their fp32 logits and greedy
generations.

    python qwen2_reference.py <cases.json> <out.npz>

cases.json: ``{"inputs": <npz with input_ids, attention_mask>, "max_new_tokens": n, "cases":
[{"name", "dir", "tie", "layout", "rope_theta"}]}``. For each case the checkpoint is written to ``dir``
(layout "transformers5": as transformers 5 saves it; "published": rewritten to the 2024/2025 layout,
top-level ``rope_theta`` and the sliding-window fields of the published configs, switched off), then
``<name>/logits`` (B, L, V), ``<name>/greedy`` (B, T) without eos, ``<name>/eos`` (the token greedy decoding
emits at step 2 of row 0) and ``<name>/greedy_eos`` (B, T) generated with that eos (rows stop there).
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

VOCAB = 320
PAD = 0


def build(case: dict) -> None:
    import torch
    import transformers

    torch.manual_seed(7)
    config = transformers.Qwen2Config(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=112, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, rms_norm_eps=1e-6, hidden_act="silu", tie_word_embeddings=case["tie"],
        rope_parameters={"rope_type": "default", "rope_theta": case["rope_theta"]}, pad_token_id=PAD,
        max_position_embeddings=512,
    )
    model = transformers.Qwen2ForCausalLM(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2 or "bias" in name:  # larger than the default init so errors are visible
                p.normal_(0.0, 0.2)
    model.save_pretrained(case["dir"])
    if case["layout"] == "published":
        path = os.path.join(case["dir"], "config.json")
        with open(path) as f:
            d = json.load(f)
        rope = d.pop("rope_parameters")
        d.pop("layer_types", None)
        d["torch_dtype"] = d.pop("dtype", "float32")
        # R1-Distill-Qwen / Qwen2.5-Instruct style: sliding-window fields present, switched off
        d.update(rope_theta=rope["rope_theta"], rope_scaling=None, use_sliding_window=False, sliding_window=4096,
                 max_window_layers=1)
        with open(path, "w") as f:
            json.dump(d, f, indent=2)


def reference(spec: dict) -> dict[str, np.ndarray]:
    import torch
    import transformers

    inputs = dict(np.load(spec["inputs"]))
    ids = torch.from_numpy(inputs["input_ids"])
    mask = torch.from_numpy(inputs["attention_mask"])
    positions = (mask.cumsum(-1) - 1).clamp(min=0) * mask  # padding skipped, as generate() does
    out = {}
    for case in spec["cases"]:
        build(case)
        model = transformers.Qwen2ForCausalLM.from_pretrained(case["dir"], dtype=torch.float32).eval()
        name, n = case["name"], spec["max_new_tokens"]
        with torch.no_grad():
            out[f"{name}/logits"] = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits.numpy()
            kw = dict(attention_mask=mask, max_new_tokens=n, do_sample=False, pad_token_id=PAD)
            greedy = model.generate(ids, eos_token_id=None, min_new_tokens=n, **kw)[:, ids.shape[1]:]
            eos = int(greedy[0, 2])
            with_eos = model.generate(ids, eos_token_id=eos, **kw)[:, ids.shape[1]:]
        out[f"{name}/greedy"] = greedy.numpy()
        out[f"{name}/eos"] = np.asarray(eos)
        out[f"{name}/greedy_eos"] = with_eos.numpy()
    return out


if __name__ == "__main__":
    spec_path, out_path = sys.argv[1:]
    with open(spec_path) as f:
        np.savez(out_path, **reference(json.load(f)))
