"""Open-vocabulary detection (OVD) evaluation: COCO mAP / AP50 and greedy P/R@0.5 over the set.

Rows (VLM-R1's OVD format, one per line of <data_root>/<dataset>.jsonl):
    {"image": "rel/path.jpg", "problem": "... detect the following objects: [cat, dog] ...",
     "solution": "```json\\n[{\\"bbox_2d\\": [x1, y1, x2, y2], \\"label\\": \\"cat\\"}]\\n```"}   (or "None")
with boxes in original image pixels.

    python eval/test_ovd.py --model_path CKPT --data_root data/ --image_root data/coco/ \\
        --test_datasets ovd_test --method r1 --batch_size 8
"""

import paddlemix_r1

paddlemix_r1.configure_runtime()  # CPU runtime settings, before the evaluator imports paddle

from paddlemix_r1.eval.cli import main_ovd  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main_ovd())
