"""Command lines of eval/test_rec.py and eval/test_r1-v.py (flags of PaddleMIX R1-MLLM's README).

    python eval/test_rec.py --model_name Qwen2.5-VL-3B-Instruct --method r1 --model_path <ckpt> \\
        --data_root data/rec_jsons_processed --image_root data/coco \\
        --test_datasets refcoco_val refcocop_val refcocog_val --batch_size 32 --sample_num 500 \\
        --steps 300 --seed 42
    python eval/test_r1-v.py ... --data_root data/ --image_root data/superclevr_200/ \\
        --test_datasets superclevr_test200_counting_problems

``main_rec(argv)`` / ``main_r1v(argv)`` are the scripts' entry points. Every dataset is read and
validated before the model is loaded, so a malformed file fails in seconds.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from paddlemix_r1 import atomic
from paddlemix_r1.eval.data import EvalRow, read_eval_rows, select_rows
from paddlemix_r1.eval.evaluator import METHODS, EvalSample, EvalSummary, GenerateFn, evaluate, format_table
from paddlemix_r1.families import VISION_FAMILIES
from paddlemix_r1.processing.image_processor import ImageProcessor
from paddlemix_r1.tasks import get_task

# The published test sets' file names: <data_root>/<dataset><extension>.
EXTENSIONS = {"rec": ".json", "counting": ".jsonl", "geoqa": ".jsonl", "ovd": ".jsonl",
              # Curr-ReFT's test sets ({image, problem, solution}, <answer> golds)
              "detection": ".jsonl", "classify": ".jsonl", "math": ".jsonl"}
# Generation budgets of the reference scripts (each task's ``max_new_tokens``): VLM-R1 / PaddleMIX
# REC and R1-V counting use 256 new tokens, R1-V GeoQA 1024 (its reasoning chains are longer).
DEFAULT_MAX_NEW_TOKENS = {task: get_task(task).max_new_tokens for task in EXTENSIONS}


def _common_parser(
    prog: str, description: str, default_datasets: list[str], default_sample_num: int | None
) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--model_name", default="Qwen2.5-VL-3B-Instruct", help="label used in output file names")
    p.add_argument("--method", choices=METHODS, default="r1", help="prompt set: r1 (think/answer tags) or baseline")
    p.add_argument(
        "--model_path", required=True, help="checkpoint directory (config.json, *.safetensors, processor files)"
    )
    p.add_argument("--data_root", required=True, help="directory holding <dataset>.json / <dataset>.jsonl")
    p.add_argument("--image_root", required=True, help="directory the rows' image paths are relative to")
    p.add_argument("--test_datasets", nargs="+", default=default_datasets, help="dataset file names without extension")
    p.add_argument("--batch_size", type=int, default=32, help="prompts per generation call")
    p.add_argument(
        "--sample_num",
        type=int,
        default=default_sample_num,
        help="evaluate N rows drawn by a --seed shuffle (None: every row, in file order)",
    )
    p.add_argument("--steps", type=int, default=100, help="checkpoint step, recorded in output names")
    p.add_argument("--seed", type=int, default=42, help="seed of the --sample_num shuffle and of sampling")
    p.add_argument(
        "--dtype",
        choices=("float32", "bfloat16", "float16"),
        default=None,
        help="model dtype (None: bfloat16 on GPU, float32 on CPU)",
    )
    p.add_argument("--output_dir", default="logs", help="where per-sample JSONL and summaries are written")
    p.add_argument(
        "--max_new_tokens",
        type=int,
        default=None,
        help=f"generation budget (None: the reference scripts' per task {DEFAULT_MAX_NEW_TOKENS}, the largest "
        "of the run's tasks)",
    )
    p.add_argument(
        "--num_samples",
        type=int,
        default=1,
        help="k completions per question; a question counts as correct if any is (pass@k). "
        "k=1 decodes greedily, k>1 samples with --temperature / --top_p",
    )
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature when --num_samples > 1")
    p.add_argument("--top_p", type=float, default=None, help="nucleus sampling when --num_samples > 1")
    p.add_argument("--min_pixels", type=int, default=None, help="image processor min_pixels (None: the checkpoint's)")
    p.add_argument("--max_pixels", type=int, default=None, help="image processor max_pixels (None: the checkpoint's)")
    p.add_argument(
        "--model_family",
        choices=VISION_FAMILIES,
        default=None,
        help="box frame of the model's answers (None: model_type of <model_path>/config.json)",
    )
    return p


def rec_parser() -> argparse.ArgumentParser:
    """Parser of eval/test_rec.py."""
    return _common_parser(
        "test_rec.py", "Evaluate referring expression comprehension (REC) accuracy.", ["refgta_subsample"], 500
    )


def r1v_parser() -> argparse.ArgumentParser:
    """Parser of eval/test_r1-v.py (SuperCLEVR counting and GeoQA)."""
    p = _common_parser(
        "test_r1-v.py",
        "Evaluate counting (SuperCLEVR) and geometry (GeoQA) accuracy.",
        ["superclevr_test200_counting_problems"],
        None,
    )
    p.add_argument(
        "--task",
        choices=("auto", "counting", "geoqa", "math", "classify", "detection"),
        default="auto",
        help="scoring of every dataset; auto: 'geo' in the name -> geoqa, 'count' or 'clevr' -> counting; "
             "math / classify / detection: Curr-ReFT's test sets",
    )
    return p


def ovd_parser() -> argparse.ArgumentParser:
    """Parser of eval/test_ovd.py (open-vocabulary detection)."""
    return _common_parser(
        "test_ovd.py",
        "Evaluate open-vocabulary detection: COCO mAP / AP50 and greedy P/R@0.5 over the set, accuracy per row.",
        ["ovd_test"],
        None,
    )


def infer_r1v_task(dataset: str) -> str:
    """counting or geoqa from a dataset name; ValueError if the name says neither."""
    name = dataset.lower()
    if "geo" in name:
        return "geoqa"
    if "count" in name or "clevr" in name:
        return "counting"
    raise ValueError(f"cannot tell the task of dataset {dataset!r} from its name; pass --task counting or --task geoqa")


def resolve_model_family(args: argparse.Namespace) -> str:
    """--model_family, else the model_type in <model_path>/config.json."""
    if args.model_family is not None:
        return args.model_family
    config_path = os.path.join(args.model_path, "config.json")
    if not os.path.isfile(config_path):
        raise FileNotFoundError(
            f"no config.json at {args.model_path}; pass --model_family {{{','.join(VISION_FAMILIES)}}}"
        )
    with open(config_path, encoding="utf-8") as f:
        model_type = json.load(f).get("model_type")
    if model_type not in VISION_FAMILIES:
        raise ValueError(
            f"{config_path}: model_type {model_type!r} is not one of {VISION_FAMILIES}; pass --model_family"
        )
    return model_type


def resolve_image_processor(args: argparse.Namespace) -> ImageProcessor:
    """The checkpoint's image processor with --min_pixels / --max_pixels applied.

    The SAME object must size the model's images (build_generate_fn) and map REC boxes back
    (evaluate's ``resize``), so both see identical pixel limits.
    """
    config = ImageProcessor.from_pretrained(args.model_path).to_config()
    if args.min_pixels is not None:
        config["min_pixels"] = args.min_pixels
    if args.max_pixels is not None:
        config["max_pixels"] = args.max_pixels
    return ImageProcessor.from_config(config, source=f"{args.model_path} with command-line pixel limits")


def build_generate_fn(args: argparse.Namespace, image_processor: ImageProcessor | None = None) -> GenerateFn:
    """The model-backed ``generate_fn`` for ``evaluate``: our model and Processor from
    ``args.model_path``, batched left-padded prompts, ``num_samples`` completions per row (greedy
    when 1, sampled with --temperature / --top_p otherwise), decoded without special tokens.

    ``image_processor`` (the one REC boxes are mapped back with) sizes the model's images, and each
    image's grid is checked against the ``resized_size`` the evaluator scores with.
    """
    from paddlemix_r1.generation import generate
    from paddlemix_r1.models import from_pretrained
    from paddlemix_r1.ops import device_kind
    from paddlemix_r1.processing import Processor

    proc = Processor.from_pretrained(args.model_path)
    if image_processor is not None:
        proc = Processor(proc.tokenizer, image_processor, source=args.model_path)
    dtype = args.dtype or ("bfloat16" if device_kind() == "gpu" else "float32")
    model = from_pretrained(args.model_path, dtype=dtype)
    patch = proc.image_processor.patch_size
    k = args.num_samples

    def generate_fn(samples: Sequence[EvalSample]) -> list[str]:
        batch = proc([s.conversation for s in samples], [[s.image] for s in samples])
        grid = batch["image_grid_thw"].numpy()
        for s, (_, gh, gw) in zip(samples, grid):
            if s.resized_size is not None and (gw * patch, gh * patch) != tuple(s.resized_size):
                raise RuntimeError(
                    f"row {s.row.id}: model input is {gw * patch}x{gh * patch}, boxes are scored against "
                    f"{s.resized_size[0]}x{s.resized_size[1]}: pixel limits differ between model and evaluator"
                )
        out = generate(model, batch, max_new_tokens=args.max_new_tokens, do_sample=k > 1,
                       temperature=args.temperature, top_p=args.top_p, num_return_sequences=k,
                       eos_token_id=proc.eos_token_id, pad_token_id=proc.pad_token_id, seed=args.seed)
        return proc.batch_decode(out.completion_ids.numpy().tolist(), skip_special_tokens=True)

    return generate_fn


def _load_datasets(args: argparse.Namespace, task_of: dict[str, str]) -> dict[str, list[EvalRow]]:
    datasets = {}
    for name in args.test_datasets:
        task = task_of[name]
        path = os.path.join(args.data_root, name + EXTENSIONS[task])
        if not os.path.isfile(path):
            raise FileNotFoundError(f"dataset {name!r}: no file {path}")
        datasets[name] = select_rows(read_eval_rows(path, args.image_root, task), args.sample_num, args.seed)
    return datasets


def run(args: argparse.Namespace, task_of: dict[str, str]) -> list[EvalSummary]:
    """Load every dataset, build the generator once, evaluate each dataset, print and save a table."""
    for name in ("batch_size", "num_samples"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(args, name)}")
    datasets = _load_datasets(args, task_of)
    if args.max_new_tokens is None:
        # one generator serves every dataset of the run: give it the largest per-task budget (on a copy:
        # the caller's namespace is left as it was)
        budget = max(get_task(task).max_new_tokens for task in task_of.values())
        args = argparse.Namespace(**{**vars(args), "max_new_tokens": budget})
    needs_boxes = any(get_task(task).uses_boxes for task in task_of.values())
    model_family = resolve_model_family(args) if needs_boxes else None
    image_processor = resolve_image_processor(args) if needs_boxes else None
    generate_fn = build_generate_fn(args, image_processor)

    settings: dict[str, Any] = {
        k: getattr(args, k)
        for k in (
            "model_name",
            "model_path",
            "steps",
            "seed",
            "sample_num",
            "dtype",
            "max_new_tokens",
            "temperature",
            "top_p",
        )
    }
    if image_processor is not None:
        settings.update(min_pixels=image_processor.min_pixels, max_pixels=image_processor.max_pixels)
    summaries = []
    for name, rows in datasets.items():
        task = task_of[name]
        summaries.append(
            evaluate(
                rows,
                generate_fn,
                task,
                method=args.method,
                dataset=name,
                batch_size=args.batch_size,
                num_samples=args.num_samples,
                model_family=model_family,
                resize=image_processor.resized_size if image_processor is not None else None,
                output_dir=args.output_dir,
                run_name=f"{name}_{args.model_name.lower()}_{args.method}_{args.steps}",
                settings=settings,
            )
        )
    print(format_table(summaries))
    table_path = os.path.join(args.output_dir, f"summary_{args.model_name.lower()}_{args.method}_{args.steps}.json")
    atomic.write_json(table_path, [asdict(s) for s in summaries], ensure_ascii=False)
    print(f"summary saved to {table_path}")
    return summaries


def main_rec(argv: Sequence[str] | None = None) -> int:
    """Entry point of eval/test_rec.py."""
    args = rec_parser().parse_args(argv)
    run(args, {name: "rec" for name in args.test_datasets})
    return 0


def main_r1v(argv: Sequence[str] | None = None) -> int:
    """Entry point of eval/test_r1-v.py."""
    args = r1v_parser().parse_args(argv)
    if args.task == "auto":
        task_of = {name: infer_r1v_task(name) for name in args.test_datasets}
    else:
        task_of = {name: args.task for name in args.test_datasets}
    run(args, task_of)
    return 0


def main_ovd(argv: Sequence[str] | None = None) -> int:
    """Entry point of eval/test_ovd.py."""
    args = ovd_parser().parse_args(argv)
    run(args, {name: "ovd" for name in args.test_datasets})
    return 0
