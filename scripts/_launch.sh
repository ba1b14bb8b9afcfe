# Shared body of scripts/run_grpo_{rec,counting,geometry}.sh and run_curriculum.sh; they set, then source this file:
#   NAME         run name (default log dir outputs/launch_logs/$NAME)
#   RECIPE       default config for GPUs
#   CPU_ARGS     array of extra overrides for the CPU mode's tiny synthetic variant
#   CPU_CONFIG   default config with CPU=1 (default configs/tiny_cpu.yaml)
#   ENTRY        the per-rank script (default scripts/train.py)
# Environment (all optional):
#   GPUS=0,1,2,3,4,5,6,7   devices, one process each
#   MODEL_PATH=dir         local checkpoint directory (default: the recipe's model_name_or_path)
#   OUTPUT_DIR=dir         checkpoints, VisualDL logs, completions.jsonl (default: the recipe's output_dir)
#   CONFIG=file            another recipe (default: $RECIPE; with CPU=1: configs/tiny_cpu.yaml)
#   LOG_DIR=dir            the launcher's per-rank logs (default: outputs/launch_logs/$NAME)
#   CPU=1                  NPROC (default 2) processes on CPU (gloo), device=cpu: a tiny random model on
#                          synthetic data unless CONFIG/MODEL_PATH say otherwise
#   PYTHON=interpreter     default: python3 of the active environment (the first on PATH), else python
#   DRY_RUN=1              print the command instead of running it
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# A bare `python` may be another interpreter than the environment's (or none); python3 is the environment's.
PYTHON=${PYTHON:-$(command -v python3 || command -v python || true)}
if [[ -z "$PYTHON" ]]; then
  echo "no python3 or python on PATH: activate the environment or set PYTHON=/path/to/python" >&2
  exit 2
fi

args=()
if [[ "${CPU:-0}" == 1 ]]; then
  nproc_cpu=${NPROC:-2}
  devices=(--nproc_per_node "$nproc_cpu")
  args+=(--config "${CONFIG:-${CPU_CONFIG:-configs/tiny_cpu.yaml}}" device=cpu)
  if [[ -z "${CONFIG:-}" ]]; then
    args+=("${CPU_ARGS[@]}")
  fi
  # The processes share the cores: one share of the threads each (a value the caller exported wins).
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(( $(nproc) / nproc_cpu > 0 ? $(nproc) / nproc_cpu : 1 ))}
else
  devices=(--gpus "${GPUS:-0,1,2,3,4,5,6,7}")
  args+=(--config "${CONFIG:-$RECIPE}")
fi
if [[ -n "${MODEL_PATH:-}" ]]; then args+=("model_name_or_path=$MODEL_PATH"); fi
if [[ -n "${OUTPUT_DIR:-}" ]]; then args+=("output_dir=$OUTPUT_DIR"); fi

cmd=("$PYTHON" -m paddle.distributed.launch "${devices[@]}" --log_dir "${LOG_DIR:-outputs/launch_logs/$NAME}"
     "${ENTRY:-scripts/train.py}" "${args[@]}" "$@")
if [[ "${DRY_RUN:-0}" == 1 ]]; then
  printf '%q ' "${cmd[@]}"
  echo
else
  exec "${cmd[@]}"
fi
