#!/usr/bin/env bash
# REC GRPO (RefCOCO/+/g) on Qwen2.5-VL-3B-Instruct, recipe configs/rec_qwen2_5_vl_3b.yaml.
# Data parallel: one process per GPU, each taking its own prompts_per_step prompts per step.
#
#   bash scripts/run_grpo_rec.sh [key=value ...]     # extra GRPOConfig overrides, e.g. max_steps=100
#
# Environment: GPUS, MODEL_PATH, OUTPUT_DIR, CONFIG, LOG_DIR, CPU=1 (+ NPROC), PYTHON, DRY_RUN (see _launch.sh).
NAME=rec
RECIPE=configs/rec_qwen2_5_vl_3b.yaml
CPU_ARGS=(task=rec dataset=synthetic_rec "reward_funcs=[rec_iou, rec_format]" output_dir=outputs/tiny_cpu_rec)
source "$(dirname "${BASH_SOURCE[0]}")/_launch.sh"
