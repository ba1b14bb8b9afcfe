#!/usr/bin/env bash
# Counting GRPO (CLEVR-70K) on Qwen2-VL-2B-Instruct, recipe configs/counting_qwen2_vl_2b.yaml.
# Data parallel: one process per GPU, each taking its own prompts_per_step prompts per step.
#
#   bash scripts/run_grpo_counting.sh [key=value ...]     # extra GRPOConfig overrides, e.g. max_steps=100
#
# Environment: GPUS, MODEL_PATH, OUTPUT_DIR, CONFIG, LOG_DIR, CPU=1 (+ NPROC), PYTHON, DRY_RUN (see _launch.sh).
NAME=counting
RECIPE=configs/counting_qwen2_vl_2b.yaml
CPU_ARGS=(output_dir=outputs/tiny_cpu_counting)
source "$(dirname "${BASH_SOURCE[0]}")/_launch.sh"
