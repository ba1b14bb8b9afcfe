"""Counting (SuperCLEVR) and geometry (GeoQA) evaluation: exact integer / math_verify accuracy.

    python eval/test_r1-v.py --model_path CKPT --data_root data/ --image_root data/superclevr_200/ \\
        --test_datasets superclevr_test200_counting_problems --method r1 --batch_size 32
"""

import paddlemix_r1

paddlemix_r1.configure_runtime()  # CPU runtime settings, before the evaluator imports paddle

from paddlemix_r1.eval.cli import main_r1v  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main_r1v())
