"""pass@k from real samples: run an evaluation with --num_samples n first, then

    python eval/test_r1-v.py --model_path CKPT ... --num_samples 16 --temperature 1.0 --output_dir logs
    python eval/pass_at_k.py logs/<run_name>.jsonl --k_values 1,2,4,8,16 --output_dir logs
"""

from paddlemix_r1.eval.passk import main

if __name__ == "__main__":
    raise SystemExit(main())
