#!/usr/bin/env bash
# Download the R1-MLLM data into ./data (or --dest D):
#   bash scripts/download_data.sh rec|counting|geo|test|all [--dest data] [--base_url URL] [--keep_archives]
# Resumes interrupted downloads; see paddlemix_r1/data/download.py for the layout and the checks.
set -euo pipefail
if [ "$#" -eq 0 ]; then
    echo "usage: bash scripts/download_data.sh rec|counting|geo|test|all [--dest data] [--base_url URL]" >&2
    exit 2
fi
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# The package runs from the checkout whether or not it is pip-installed.
export PYTHONPATH="${repo}${PYTHONPATH:+:${PYTHONPATH}}"
# PYTHON: the interpreter; default python3 of the active environment (a bare `python` may be another one).
PYTHON=${PYTHON:-$(command -v python3 || command -v python || true)}
if [ -z "$PYTHON" ]; then
    echo "no python3 or python on PATH: activate the environment or set PYTHON=/path/to/python" >&2
    exit 2
fi
exec "$PYTHON" -m paddlemix_r1.data.download "$@"
