"""The evaluation loop: prompts -> injected generation -> the task's metric -> records + summary.

Generation is injected (``generate_fn``) so the loop runs without a model in tests and so the CLI
can plug in the Paddle model later. Prompts, answer parsing and scoring are the task's
(``paddlemix_r1.tasks``), which reuses the reward modules' parsing and coordinate code, so the
evaluator and the training rewards cannot disagree about what an answer says:

rec       correct iff IoU >= 0.5 in ORIGINAL pixels (the box is mapped from the model's frame)
counting  correct iff the answered integer equals the gold count
geoqa     correct iff math_verify says the answer equals the gold ("140°" works)
general   correct iff the row's VLM-R1 accuracy method scores 1

``--method r1`` reads only the answer block, as training does; ``baseline`` (prompts that need not
ask for tags) also reads an answer from the whole text when there is no block.

Accuracy is ``correct / n`` over ALL selected rows: a row that cannot be scored is recorded with its
error, counted in ``errors`` and scored incorrect, so a broken test set lowers the number rather than
silently shrinking the denominator (nor aborting the run). Such a row is one whose image is
missing, undecodable (truncated data) or of a size the image processor refuses (``image: ...``:
``data.readers.image_size_problem``, an aspect ratio above 200), or whose gold answer the task cannot
score (``gold: ...``: ``Task.check_gold``, checked before generation, or math_verify unable to read a
geoqa gold when it is scored). Rows with a bad gold are left out of the set-level metrics (ovd's
mAP), which cannot score them.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from PIL import Image
from tqdm import tqdm

from paddlemix_r1 import atomic
from paddlemix_r1.data.readers import image_size_problem
from paddlemix_r1.eval.data import EvalRow
from paddlemix_r1.processing.image_processor import load_image
from paddlemix_r1.rewards.coords import QWEN2_5_VL
from paddlemix_r1.rewards.math_answer import GoldUnparsedError, MathVerifier
from paddlemix_r1.tasks import SampleScore, ScoreContext, build_conversation, get_task

METHODS = ("r1", "baseline")
"""The evaluation CLIs' ``--method``: prompt variants every evaluated task has in the prompt table."""

__all__ = ["IMAGE_ERRORS", "METHODS", "EvalSample", "EvalSummary", "GenerateFn", "SampleScore", "evaluate",
           "format_table"]

# What PIL raises for missing, truncated or undecodable files (UnidentifiedImageError and
# FileNotFoundError are OSErrors; some plugins raise SyntaxError / EOFError on corrupt headers).
IMAGE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


@dataclass
class EvalSample:
    """What ``generate_fn`` receives for one row whose image loaded.

    prompt:        the filled question template (also in ``conversation``).
    conversation:  ``[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]``, the
                   Processor's format; pass ``[[sample.image]]``-style image lists alongside.
    image:         the image, upright (EXIF applied) and RGB, as the Processor would load it.
    image_size:    (W, H) of ``image``: the frame of the gold boxes.
    resized_size:  (W, H) after smart_resize with the run's pixel limits, or None when no
                   ``resize`` was given (only REC needs it).
    """

    row: EvalRow
    prompt: str
    conversation: list[dict[str, Any]]
    image: Image.Image
    image_size: tuple[int, int]
    resized_size: tuple[int, int] | None


GenerateFn = Callable[[Sequence[EvalSample]], Sequence[str]]
"""``generate_fn(samples) -> completions``: ``len(samples) * num_samples`` decoded strings, group-major
(row i's completions at ``i*k .. i*k+k-1``), the layout of ``generation.generate`` with
``num_return_sequences=k``. It is built for one ``num_samples`` and sampling setting."""


@dataclass
class EvalSummary:
    """Result of one dataset. ``accuracy`` = correct / n; rows with ``errors`` count as incorrect."""

    dataset: str
    task: str
    method: str
    n: int
    correct: int
    errors: int
    accuracy: float
    num_samples: int
    prompt_template: str
    prompt_source: str
    scoring_issues: dict[str, int] = field(default_factory=dict)  # e.g. math timeouts, per status
    metrics: dict[str, float] = field(default_factory=dict)  # the task's set-level metrics (ovd: mAP, AP50, P, R)
    settings: dict[str, Any] = field(default_factory=dict)
    results_path: str | None = None
    summary_path: str | None = None


def _load(
    row: EvalRow, resize: Callable[[int, int], tuple[int, int]] | None
) -> tuple[Image.Image, tuple, tuple | None]:
    image = load_image(row.image)
    size = image.size
    problem = image_size_problem(*size)  # what the processor would raise later, for the whole batch
    if problem is not None:
        raise ValueError(problem)
    return image, size, (tuple(resize(*size)) if resize is not None else None)


def _gold_error(task_obj: Any, row: EvalRow) -> str | None:
    """Why ``row``'s gold cannot be scored (the reader's verdict, else ``Task.check_gold``), or None."""
    if row.error is not None:
        return row.error
    try:
        task_obj.check_gold(row.solution, row.source)
    except (TypeError, ValueError) as e:
        return str(e)
    return None


def evaluate(
    rows: Sequence[EvalRow],
    generate_fn: GenerateFn,
    task: str,
    *,
    method: str = "r1",
    dataset: str = "",
    batch_size: int = 8,
    num_samples: int = 1,
    model_family: str | None = None,
    resize: Callable[[int, int], tuple[int, int]] | None = None,
    verifier: MathVerifier | None = None,
    output_dir: str | os.PathLike | None = None,
    run_name: str | None = None,
    settings: dict[str, Any] | None = None,
    progress: bool | None = None,
) -> EvalSummary:
    """Evaluate ``rows`` of one dataset; write per-sample JSONL and a summary JSON if ``output_dir``.

    task:          a task name (``tasks.list_tasks()``; the CLIs use "rec", "counting", "geoqa").
    method:        the task's prompt method (``tasks.prompts.PROMPTS``): the CLIs' "r1" or "baseline"
                   (``METHODS``), or another of the task's (general: "default", "gui", ...). "baseline"
                   also reads an answer written without ``<answer>`` tags.
    num_samples:   k completions per row (pass@k: a row is correct if any of its k is).
    model_family:  rec only, required: the frame the model writes boxes in.
    resize:        ``(W, H) -> (W', H')`` of the image the model sees, i.e. the run's image
                   processor's ``resized_size`` (smart_resize with its min/max pixels). Required
                   for rec with qwen2_5_vl. It is computed here from the original size rather than
                   returned by ``generate_fn`` because it is a pure function of the size and the
                   pixel limits: the CLI builds ONE image processor and hands it to both the model
                   input and this loop, results stay re-scorable offline, and injected-output tests
                   need no processor.
    verifier:      geoqa only; default the process-wide math_verify worker.
    (general rows are scored by the ``accuracy`` reward with each row's ``accu_reward_method``.)
    settings:      free-form run settings copied into the summary (model, seed, ...).
    progress:      tqdm bar on stderr; None shows it only when stderr is a terminal.

    Files: ``<output_dir>/<run_name>.jsonl`` (one record per row, written as rows finish) and
    ``<output_dir>/<run_name>.summary.json``; run_name defaults to ``<dataset>_<task>_<method>``.
    """
    task_obj = get_task(task)
    if method not in task_obj.methods:
        raise ValueError(f"method must be a prompt method of task {task!r} ({', '.join(task_obj.methods)}), "
                         f"got {method!r}")
    if batch_size < 1 or num_samples < 1:
        raise ValueError(f"batch_size and num_samples must be >= 1, got {batch_size} and {num_samples}")
    if not rows:
        raise ValueError(f"{dataset or 'dataset'}: no rows to evaluate")
    task_obj.check_evaluation(model_family)
    if task_obj.uses_boxes and model_family == QWEN2_5_VL and resize is None:
        raise ValueError(f"{task} evaluation of qwen2_5_vl needs resize (its boxes are in resized-image pixels)")

    template = task_obj.template(method)
    # a missing field fails here, before any generation
    prompts = [template.format(row.prompt_fields(), row.source) for row in rows]
    lenient = method == "baseline"

    def scorer(completion: str, sample: EvalSample) -> SampleScore:
        row = sample.row
        ctx = ScoreContext(model_family=model_family, image_size=sample.image_size, resized_size=sample.resized_size,
                           verifier=verifier, lenient=lenient, accu_reward_method=row.fields.get("accu_reward_method"),
                           where=row.source)
        return task_obj.score(completion, row.solution, ctx)

    dataset = dataset or task
    run_name = run_name or f"{dataset}_{task}_{method}"
    results_path = summary_path = None
    out = None
    if output_dir is not None:
        os.makedirs(output_dir, exist_ok=True)
        results_path = os.path.join(output_dir, f"{run_name}.jsonl")
        summary_path = os.path.join(output_dir, f"{run_name}.summary.json")
        out = open(results_path, "w", encoding="utf-8")  # noqa: SIM115 - closed in the finally below

    correct = errors = 0
    issues: Counter[str] = Counter()
    answered: list[tuple[Any, Any]] = []  # (gold, recorded parsed answer) per row, for task_obj.dataset_metrics
    bar = tqdm(total=len(rows), desc=dataset, unit="row", disable=None if progress is None else not progress)
    try:
        for start in range(0, len(rows), batch_size):
            batch_rows = rows[start : start + batch_size]
            batch_prompts = prompts[start : start + batch_size]
            records: list[dict[str, Any]] = []
            samples: list[EvalSample] = []
            sample_of: list[int | None] = []  # record -> index into samples (None: image error)
            for row, prompt in zip(batch_rows, batch_prompts):
                record = {"id": row.id, "dataset": dataset, "image": row.image, "prompt": prompt, "gold": row.solution}
                gold_error = _gold_error(task_obj, row)
                if gold_error is not None:
                    record.update(error=f"gold: {gold_error}", score=0.0, correct=False, samples=[])
                    errors += 1
                    sample_of.append(None)
                    records.append(record)
                    continue
                try:
                    image, size, resized = _load(row, resize)
                except IMAGE_ERRORS as e:
                    record.update(error=f"image: {type(e).__name__}: {e}", score=0.0, correct=False, samples=[])
                    errors += 1
                    sample_of.append(None)
                else:
                    record.update(image_size=list(size), resized_size=None if resized is None else list(resized))
                    sample_of.append(len(samples))
                    samples.append(EvalSample(row, prompt, build_conversation(prompt, 1), image, size, resized))
                records.append(record)

            completions = list(generate_fn(samples)) if samples else []
            if len(completions) != len(samples) * num_samples:
                raise RuntimeError(
                    f"generate_fn returned {len(completions)} completions for {len(samples)} samples x "
                    f"num_samples={num_samples}"
                )

            for record, i in zip(records, sample_of):
                scored = []
                if i is not None:
                    group = completions[i * num_samples : (i + 1) * num_samples]
                    try:
                        scored = [(c, scorer(c, samples[i])) for c in group]
                    except GoldUnparsedError as e:  # a gold only scoring can judge (geoqa: math_verify)
                        record.update(error=f"gold: {e}", score=0.0, correct=False, samples=[])
                        errors += 1
                if scored:
                    best = next((pair for pair in scored if pair[1].correct), max(scored, key=lambda p: p[1].score))
                    record.update(
                        raw_output=best[0],
                        parsed_answer=best[1].parsed,
                        score=max(s.score for _, s in scored),
                        correct=any(s.correct for _, s in scored),
                        error=None,
                        samples=[
                            {"raw_output": c, "parsed_answer": s.parsed, "score": s.score, "correct": s.correct}
                            | ({"status": s.status} if s.status is not None else {})
                            for c, s in scored
                        ],
                    )
                    correct += record["correct"]
                    issues.update(s.status for _, s in scored if s.status in ("timeout", "error"))
                if not (record["error"] or "").startswith("gold: "):  # set metrics cannot score a bad gold
                    answered.append((record["gold"], record.get("parsed_answer")))
                if out is not None:
                    out.write(json.dumps(record, ensure_ascii=False) + "\n")
            if out is not None:
                out.flush()
            bar.update(len(batch_rows))
    finally:
        bar.close()
        if out is not None:
            out.close()

    summary = EvalSummary(
        dataset=dataset,
        task=task,
        method=method,
        n=len(rows),
        correct=correct,
        errors=errors,
        accuracy=correct / len(rows),
        num_samples=num_samples,
        prompt_template=template.template,
        prompt_source=template.source,
        scoring_issues=dict(issues),
        metrics=task_obj.dataset_metrics(answered),
        settings=dict(settings or {}, model_family=model_family, batch_size=batch_size),
        results_path=results_path,
        summary_path=summary_path,
    )
    if summary_path is not None:
        atomic.write_json(summary_path, asdict(summary), ensure_ascii=False)
    return summary


def format_table(summaries: Sequence[EvalSummary]) -> str:
    """A plain-text table: dataset, task, method, n, errors, accuracy (%) [, pass@k] [, set-level metrics (%)]."""
    header = ("dataset", "task", "method", "n", "errors", "accuracy")
    with_metrics = any(s.metrics for s in summaries)
    if with_metrics:
        header += ("metrics",)
    lines = [
        (
            s.dataset,
            s.task,
            s.method,
            str(s.n),
            str(s.errors),
            f"{100 * s.accuracy:.2f}%" + (f" (pass@{s.num_samples})" if s.num_samples > 1 else ""),
        )
        + ((", ".join(f"{k} {100 * v:.2f}%" for k, v in s.metrics.items()),) if with_metrics else ())
        for s in summaries
    ]
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    rule = "  ".join("-" * w for w in widths)
    return "\n".join([fmt.format(*header), rule, *(fmt.format(*line) for line in lines)])
