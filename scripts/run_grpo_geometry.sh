#!/usr/bin/env bash
# Geometry GRPO (GeoQA-8K) on Qwen2-VL-2B-Instruct, vision frozen, recipe configs/geometry_qwen2_vl_2b.yaml.
# Data parallel: one process per GPU, each taking its own prompts_per_step prompts per step.
#
#   bash scripts/run_grpo_geometry.sh [key=value ...]     # extra GRPOConfig overrides, e.g. max_steps=100
#
# Environment: GPUS, MODEL_PATH, OUTPUT_DIR, CONFIG, LOG_DIR, CPU=1 (+ NPROC), PYTHON, DRY_RUN (see _launch.sh).
NAME=geometry
RECIPE=configs/geometry_qwen2_vl_2b.yaml
CPU_ARGS=(task=geoqa dataset=synthetic_geoqa "reward_funcs=[math, format]" output_dir=outputs/tiny_cpu_geometry)
source "$(dirname "${BASH_SOURCE[0]}")/_launch.sh"
