#!/usr/bin/env bash
# REC GRPO (RefCOCO/+/g) on Qwen2.5-VL-3B-Instruct, recipe configs/rec_qwen2_5_vl_3b.yaml.
# Data parallel: one process per GPU, each taking its own prompts_per_step prompts per step.
#
#   bash scripts/run_grpo_rec.sh [key=value ...]       # extra GRPOConfig overrides, e.g. max_steps=100
#
# Environment (all optional):
#   GPUS=0,1,2,3,4,5,6,7   devices, one process each
#   MODEL_PATH=dir         local checkpoint directory (default: the recipe's model_name_or_path)
#   OUTPUT_DIR=dir         checkpoints, VisualDL logs, completions.jsonl (default: the recipe's output_dir)
#   CONFIG=file            another recipe (default: configs/rec_qwen2_5_vl_3b.yaml; with CPU=1: configs/tiny_cpu.yaml)
#   LOG_DIR=dir            the launcher's per-rank logs (default: outputs/launch_logs/rec)
#   CPU=1                  NPROC (default 2) processes on CPU (gloo), device=cpu: a tiny random model on
#                          synthetic data unless CONFIG/MODEL_PATH say otherwise
#   PYTHON=python          interpreter
#   DRY_RUN=1              print the command instead of running it
set -euo pipefail
cd "$(dirname "$0")/.."

args=()
if [[ "${CPU:-0}" == 1 ]]; then
  nproc_cpu=${NPROC:-2}
  devices=(--nproc_per_node "$nproc_cpu")
  args+=(--config "${CONFIG:-configs/tiny_cpu.yaml}" device=cpu)
  if [[ -z "${CONFIG:-}" ]]; then
    args+=(task=rec dataset=synthetic_rec "reward_funcs=[rec_iou, rec_format]" output_dir=outputs/tiny_cpu_rec)
  fi
  # The processes share the cores: one share of the threads each (a value the caller exported wins).
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(( $(nproc) / nproc_cpu > 0 ? $(nproc) / nproc_cpu : 1 ))}
else
  devices=(--gpus "${GPUS:-0,1,2,3,4,5,6,7}")
  args+=(--config "${CONFIG:-configs/rec_qwen2_5_vl_3b.yaml}")
fi
if [[ -n "${MODEL_PATH:-}" ]]; then args+=("model_name_or_path=$MODEL_PATH"); fi
if [[ -n "${OUTPUT_DIR:-}" ]]; then args+=("output_dir=$OUTPUT_DIR"); fi

cmd=("${PYTHON:-python}" -m paddle.distributed.launch "${devices[@]}" --log_dir "${LOG_DIR:-outputs/launch_logs/rec}"
     scripts/train.py "${args[@]}" "$@")
if [[ "${DRY_RUN:-0}" == 1 ]]; then
  printf '%q ' "${cmd[@]}"
  echo
else
  exec "${cmd[@]}"
fi
