"""pass@k from real samples: the unbiased estimator over the evaluator's per-sample records.

For a prompt with n sampled completions of which c are correct, the probability that at least one
of k completions drawn without replacement from the n is correct is

    pass@k = 1 - C(n - c, k) / C(n, k) = 1 - prod_{i = n-c+1}^{n} (1 - k / i)

(Chen et al. 2021, "Evaluating Large Language Models Trained on Code", the Codex paper; the product
form avoids the huge binomials). A dataset's pass@k is the mean over its prompts.

Samples come from ``evaluate(..., num_samples=n)`` (``eval/test_*.py --num_samples n``): its JSONL
holds one record per prompt with every sample's ``correct``. Nothing is interpolated or
extrapolated: a k larger than some prompt's n is refused (Curr-ReFT's published "pass@k" plot
invented points between and beyond its measured k and added 0.2 to one curve; research Part 1 §1.7).
A prompt whose image could not be read has no samples; it counts as failed at every k, as it
counts as incorrect in the evaluator's accuracy (``errors`` says how many there were).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from paddlemix_r1 import atomic

DEFAULT_KS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased pass@k estimate for one prompt: n samples, c of them correct, budget k.

    ValueError unless 0 <= c <= n and 1 <= k <= n (pass@k of k > n samples is not measured by n).
    """
    for name, value in (("n", n), ("c", c), ("k", k)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"pass_at_k: {name} must be an int, got {value!r}")
    if n < 1:
        raise ValueError(f"pass_at_k: n must be >= 1 sample, got {n}")
    if not 0 <= c <= n:
        raise ValueError(f"pass_at_k: c must be in [0, n={n}], got {c}")
    if not 1 <= k <= n:
        raise ValueError(f"pass_at_k: k must be in [1, n={n}]: pass@{k} needs at least {k} samples per prompt, "
                         f"got {n}")
    if n - c < k:  # every k-subset holds a correct sample
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


@dataclass
class PassAtK:
    """pass@k of one evaluated dataset: ``values[k]`` is the mean over its ``prompts``."""

    task: str
    dataset: str
    prompts: int
    samples_per_prompt: int
    """The smallest n over the prompts with samples (every k must be <= it)."""
    errors: int
    """Prompts without samples (image errors), scored 0 at every k."""
    values: dict[int, float] = field(default_factory=dict)
    source: str | None = None


def pass_at_k_of_records(records: Iterable[Mapping[str, Any]], ks: Sequence[int] | None = None, *,
                         task: str = "", dataset: str = "", source: str | None = None) -> PassAtK:
    """pass@k for each k in ``ks`` (None: 1, 2, 4, ... up to the smallest n) over the evaluator's
    per-prompt records (each with ``samples``: a list of dicts with ``correct``)."""
    counts: list[tuple[int, int]] = []
    errors = 0
    for i, record in enumerate(records):
        samples = record.get("samples")
        if not isinstance(samples, list):
            raise ValueError(f"{source or 'records'}: record {i} has no 'samples' list (an evaluator JSONL?)")
        if not samples:
            if record.get("error") is None:
                raise ValueError(f"{source or 'records'}: record {i} has no samples and no error")
            errors += 1
            continue
        if any(not isinstance(s, Mapping) or not isinstance(s.get("correct"), bool) for s in samples):
            raise ValueError(f"{source or 'records'}: record {i}: every sample needs a boolean 'correct'")
        counts.append((len(samples), sum(s["correct"] for s in samples)))
        dataset = dataset or str(record.get("dataset") or "")
    if not counts:
        raise ValueError(f"{source or 'records'}: no prompt has samples")
    n_min = min(n for n, _ in counts)
    if ks is None:
        ks = [k for k in DEFAULT_KS if k <= n_min]
    if not ks:
        raise ValueError("no k to compute")
    too_big = [k for k in ks if k > n_min]
    if too_big:
        raise ValueError(f"{source or 'records'}: pass@k for k={too_big} needs at least {max(too_big)} samples per "
                         f"prompt, but some prompts have only {n_min}: evaluate with --num_samples >= {max(too_big)}")
    prompts = len(counts) + errors
    values = {int(k): sum(pass_at_k(n, c, int(k)) for n, c in counts) / prompts for k in ks}
    return PassAtK(task, dataset, prompts, n_min, errors, values, source)


def read_records(path: str) -> list[dict[str, Any]]:
    """The records of one evaluator JSONL (``<run_name>.jsonl``)."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def pass_at_k_of_file(path: str, ks: Sequence[int] | None = None) -> PassAtK:
    """pass@k of one evaluator JSONL; task and dataset from its ``<run_name>.summary.json`` beside it."""
    task = dataset = ""
    summary = path[: -len(".jsonl")] + ".summary.json" if path.endswith(".jsonl") else None
    if summary is not None and os.path.isfile(summary):
        with open(summary, encoding="utf-8") as f:
            meta = json.load(f)
        task, dataset = meta.get("task", ""), meta.get("dataset", "")
    return pass_at_k_of_records(read_records(path), ks, task=task, dataset=dataset, source=path)


def write_pass_at_k(results: Sequence[PassAtK], output_dir: str, name: str = "pass_at_k") -> dict[str, str]:
    """Write ``<name>.csv`` (task, dataset, k, pass_at_k, prompts, samples_per_prompt, errors), ``<name>.json``
    and ``<name>.png`` (one line per dataset, log2 k axis); returns the three paths."""
    os.makedirs(output_dir, exist_ok=True)
    paths = {ext: os.path.join(output_dir, f"{name}.{ext}") for ext in ("csv", "json", "png")}
    with open(paths["csv"], "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["task", "dataset", "k", "pass_at_k", "prompts", "samples_per_prompt", "errors"])
        for r in results:
            for k, v in r.values.items():
                writer.writerow([r.task, r.dataset, k, v, r.prompts, r.samples_per_prompt, r.errors])
    atomic.write_json(paths["json"], [asdict(r) for r in results], ensure_ascii=False)
    plot_pass_at_k(results, paths["png"])
    return paths


def plot_pass_at_k(results: Sequence[PassAtK], path: str) -> None:
    """pass@k against k on a log2 axis, one line (measured points only) per task / dataset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for r in results:
        ks = sorted(r.values)
        label = " / ".join(x for x in (r.task, r.dataset) if x) or "pass@k"
        ax.plot(ks, [r.values[k] for k in ks], marker="o", label=f"{label} (n={r.samples_per_prompt})")
    all_ks = sorted({k for r in results for k in r.values})
    ax.set_xscale("log", base=2)
    ax.set_xticks(all_ks, [str(k) for k in all_ks])
    ax.set_xlabel("k (samples)")
    ax.set_ylabel("pass@k")
    ax.set_ylim(0.0, 1.0)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_ks(text: str) -> list[int]:
    """"1,2,4,16" -> [1, 2, 4, 16]: distinct positive ints, ascending."""
    try:
        ks = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise ValueError(f"--k_values must be comma-separated integers, got {text!r}") from None
    if not ks or ks[0] < 1:
        raise ValueError(f"--k_values must be positive integers, got {text!r}")
    return ks


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of eval/pass_at_k.py."""
    import argparse

    p = argparse.ArgumentParser(
        prog="pass_at_k.py",
        description="pass@k (unbiased estimator) from the per-sample JSONL of eval/test_*.py --num_samples n. "
        "Writes <output_dir>/<name>.csv, .json and .png (log2 k axis).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("results", nargs="+", help="evaluator JSONL files (<output_dir>/<run_name>.jsonl), one per dataset")
    p.add_argument("--k_values", default=None,
                   help="comma-separated k, each <= the samples per prompt (None: 1, 2, 4, ... up to n)")
    p.add_argument("--output_dir", default="logs", help="where the CSV, JSON and plot are written")
    p.add_argument("--name", default="pass_at_k", help="file name stem of the outputs")
    args = p.parse_args(argv)
    ks = parse_ks(args.k_values) if args.k_values is not None else None
    results = [pass_at_k_of_file(path, ks) for path in args.results]
    paths = write_pass_at_k(results, args.output_dir, args.name)
    for r in results:
        label = " / ".join(x for x in (r.task, r.dataset) if x)
        print(f"{label}: {r.prompts} prompts x {r.samples_per_prompt} samples ({r.errors} errors)  "
              + "  ".join(f"pass@{k} {100 * v:.2f}%" for k, v in r.values.items()))
    print("written: " + ", ".join(paths.values()))
    return 0
