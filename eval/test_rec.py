"""REC evaluation (RefCOCO / RefCOCO+ / RefCOCOg / RefGTA): accuracy = IoU >= 0.5 in original pixels.

    python eval/test_rec.py --model_path CKPT --data_root data/rec_jsons_processed --image_root data/coco \\
        --test_datasets refcoco_val refcocop_val refcocog_val --method r1 --batch_size 32 --sample_num 500
"""

import paddlemix_r1

paddlemix_r1.configure_runtime()  # CPU runtime settings, before the evaluator imports paddle

from paddlemix_r1.eval.cli import main_rec  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main_rec())
