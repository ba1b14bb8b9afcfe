#!/usr/bin/env bash
# Curr-ReFT curriculum GRPO (judge -> choice -> open), recipe configs/curr_reft_qwen2_5_vl_3b.yaml.
# Data parallel: one process per GPU; every rank runs the stage loop. Rerun the same command to resume.
#
#   bash scripts/run_curriculum.sh [key=value ...]   # overrides: max_steps=100, judge.learning_rate=1e-6, ...
#
# Environment: as scripts/_launch.sh (GPUS, CONFIG, MODEL_PATH, OUTPUT_DIR, LOG_DIR, CPU=1 with NPROC, PYTHON,
# DRY_RUN); with CPU=1 the recipe itself runs on CPU (device=cpu) unless CONFIG names another.
NAME=curriculum
RECIPE=configs/curr_reft_qwen2_5_vl_3b.yaml
CPU_CONFIG=$RECIPE
CPU_ARGS=()
ENTRY=scripts/curriculum.py
source "$(dirname "${BASH_SOURCE[0]}")/_launch.sh"
