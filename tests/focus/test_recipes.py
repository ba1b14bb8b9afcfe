"""The VisRL recipes parse into their configs with VisRL's settings."""

from __future__ import annotations

from pathlib import Path

import yaml

from paddlemix_r1.focus.online import load_online_config
from paddlemix_r1.focus.selfgen import GenerateConfig
from paddlemix_r1.grpo.dpo_train import DPOTrainConfig

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_dpo_recipes() -> None:
    for stage in (1, 2):
        cfg = DPOTrainConfig.load(str(CONFIGS / f"visrl_dpo_stage{stage}_qwen2_vl_7b.yaml"))
        assert cfg.stage == stage and cfg.use_peft and (cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout) == (8, 16.0, 0.0)
        assert (cfg.learning_rate, cfg.lr_scheduler_type, cfg.warmup_ratio, cfg.beta) == (5e-6, "cosine", 0.1, 0.1)
        assert cfg.loss_type == "sigmoid" and (cfg.per_device_batch_size, cfg.gradient_accumulation_steps) == (3, 8)
    assert (cfg.box_weight, cfg.answer_weight) == (0.5, 0.5)


def test_generate_online_and_sft_recipes() -> None:
    gen = GenerateConfig.load(str(CONFIGS / "visrl_generate_qwen2_vl_7b.yaml"))
    assert (gen.attempts, gen.temperature, gen.high, gen.low, gen.diversity_iou) == (3, 2.0, 0.8, 0.2, 0.05)
    grpo, focus = load_online_config(str(CONFIGS / "visrl_online_grpo_qwen2_vl_7b.yaml"), ["focus.max_box_tokens=32"])
    assert grpo.task == "focus_vqa" and grpo.loss_type == "dapo" and grpo.reward_funcs[0] == "focus_answer"
    assert focus.max_box_tokens == 32 and focus.data_files
    sft = yaml.safe_load((CONFIGS / "visrl_sft_qwen2_vl_7b.yaml").read_text())
    assert (sft["lora_r"], sft["lora_alpha"], sft["learning_rate"], sft["num_train_epochs"]) == (8, 16, 1e-4, 3)
