#!/usr/bin/env bash
# Curr-ReFT curriculum GRPO (judge -> choice -> open), recipe configs/curr_reft_qwen2_5_vl_3b.yaml.
# Data parallel: one process per GPU; every rank runs the stage loop. Rerun the same command to resume.
#
#   bash scripts/run_curriculum.sh [key=value ...]   # overrides: max_steps=100, judge.learning_rate=1e-6, ...
#
# Environment (all optional):
#   GPUS=0,1,2,3,4,5,6,7   devices, one process each
#   CONFIG=file            another curriculum recipe (default configs/curr_reft_qwen2_5_vl_3b.yaml)
#   MODEL_PATH=dir         the first stage's starting checkpoint
#   OUTPUT_DIR=dir         the curriculum directory (state file, stage directories, summary, plot)
#   LOG_DIR=dir            the launcher's per-rank logs (default outputs/launch_logs/curriculum)
#   CPU=1                  NPROC (default 2) processes on CPU (gloo), device=cpu
#   PYTHON=python          interpreter
#   DRY_RUN=1              print the command instead of running it
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

args=(--config "${CONFIG:-configs/curr_reft_qwen2_5_vl_3b.yaml}")
if [[ "${CPU:-0}" == 1 ]]; then
  nproc_cpu=${NPROC:-2}
  devices=(--nproc_per_node "$nproc_cpu")
  args+=(device=cpu)
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(( $(nproc) / nproc_cpu > 0 ? $(nproc) / nproc_cpu : 1 ))}
else
  devices=(--gpus "${GPUS:-0,1,2,3,4,5,6,7}")
fi
if [[ -n "${MODEL_PATH:-}" ]]; then args+=("model_name_or_path=$MODEL_PATH"); fi
if [[ -n "${OUTPUT_DIR:-}" ]]; then args+=("output_dir=$OUTPUT_DIR"); fi

cmd=("${PYTHON:-python}" -m paddle.distributed.launch "${devices[@]}" --log_dir "${LOG_DIR:-outputs/launch_logs/curriculum}"
     scripts/curriculum.py "${args[@]}" "$@")
if [[ "${DRY_RUN:-0}" == 1 ]]; then
  printf '%q ' "${cmd[@]}"
  echo
else
  exec "${cmd[@]}"
fi
