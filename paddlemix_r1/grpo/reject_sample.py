"""Rejection-sampling SFT data (Curr-ReFT's "rejected sampling-based self-improvement").

For each prompt: sample N completions with the rollout engine (``generate``, ``num_return_sequences=N``),
score them, keep the best one whose score is at or above ``threshold`` (none: the prompt yields no
record), and write the kept ones as ms-swift "messages" JSONL, the format Curr-ReFT's SFT trains on
(``grpo.sft.read_sft_jsonl`` reads it back)::

    {"messages": [{"role": "user", "content": "<image>{task prompt}"},
                  {"role": "assistant", "content": "{the kept completion}"}],
     "images": ["{image path}", ...]}

Scorers (``scorer`` of ``RejectSampleConfig``):

``rewards``  the training rewards: each row's task (``tasks.get_task(row["task"]).reward``, the weighted
             rewards it trains with), or the ``reward_funcs`` named in the config (weighted sum).
``judge``    an OpenAI-compatible chat endpoint that returns a 0-100 score, as Curr-ReFT had GPT-4o score
             accuracy, logical consistency, format and fluency (their judge prompt is not released:
             ``JUDGE_INSTRUCTIONS`` is ours). The reply must be one integer 0..100; anything else, and
             any failed request, scores 0 and is counted (``ScoreJudge.client.failures`` and
             ``failure_reasons``, written to the summary) -- never guessed. The judge sees the question,
             the gold answer and the response as text, not the image. Curr-ReFT kept scores > 85: with
             integer scores that is ``threshold: 86``.

``run_reject_sample(cfg)`` (the ``paddlemix-r1 reject-sample`` command) samples, writes
``cfg.output``, ``<output>.samples.jsonl`` (every completion with its score, the index kept) and
``<output>.summary.json``, and then, with ``sft_steps > 0``, runs the SFT stage (``grpo.sft``) on the
written file (or on ``sft_data``) and saves the model to ``sft_output_dir``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from paddlemix_r1 import atomic, tasks
from paddlemix_r1.grpo.sft import IMAGE_TAG
from paddlemix_r1.rewards.llm_judge import JudgeConfig, LLMJudge
from paddlemix_r1.rewards.registry import WeightedReward

SCORERS = ("rewards", "judge")

JUDGE_INSTRUCTIONS = (
    "You are a strict grader acting as a reward model. Score the model's response to the question on a scale "
    "from 0 to 100, considering the accuracy of its final answer against the reference answer, the logical "
    "consistency of its reasoning, its compliance with the answer format the question asks for, and its "
    "linguistic fluency. Reply with one integer from 0 to 100 and nothing else."
)
JUDGE_QUESTION = "Question: {question}\nReference answer: {gold}\nModel response: {response}\nScore (0-100):"
_SCORE = re.compile(r"\d{1,3}")


# ----- pure pieces ------------------------------------------------------------------------------


def select_best(scores: Sequence[float], threshold: float) -> int | None:
    """Index of the highest score that is >= ``threshold`` (the first of tied ones), None if no score is.

    A NaN score is never selected."""
    best = None
    for i, s in enumerate(scores):
        if s >= threshold and (best is None or s > scores[best]):  # NaN compares False: never kept
            best = i
    return best


def sft_record(prompt: str, completion: str, images: Sequence[Any], where: str = "row") -> dict:
    """One ms-swift "messages" record: the images as ``<image>`` tags before the prompt, the completion
    as the assistant turn. ``images`` must be file paths (ValueError naming ``where`` otherwise)."""
    for p in images:
        if not isinstance(p, str) or not p:
            raise ValueError(f"{where}: an SFT record needs image file paths, got {type(p).__name__} "
                             "(write in-memory images to files first, e.g. data.synthetic.write_jsonl_dataset)")
    return {"messages": [{"role": "user", "content": IMAGE_TAG * len(images) + prompt},
                         {"role": "assistant", "content": completion}],
            "images": list(images)}


def parse_score(reply: str) -> float | None:
    """A judge reply as a 0..100 score: one integer, surrounding space aside; None for anything else."""
    text = reply.strip()
    if not _SCORE.fullmatch(text) or int(text) > 100:
        return None
    return float(int(text))


# ----- scorers: (rows, prompts, completions (B*G, group-major), columns (B*G), G) -> B*G scores ---------


Scorer = Callable[[Sequence[dict], Sequence[str], Sequence[str], Mapping[str, list], int], list[float]]


class RewardScorer:
    """The training rewards: each row's task's weighted rewards, or the named ``reward_funcs`` (weighted)."""

    def __init__(self, reward_funcs: Sequence[str] | None = None, reward_weights: Sequence[float] | None = None):
        self.combined = None
        if reward_funcs:
            weights = list(reward_weights) if reward_weights else [1.0] * len(reward_funcs)
            if len(weights) != len(reward_funcs):
                raise ValueError(f"reward_weights has {len(weights)} entries for {len(reward_funcs)} reward_funcs")
            self.combined = WeightedReward(dict(zip(reward_funcs, weights)))

    def __call__(self, rows, prompts, completions, columns, g) -> list[float]:
        if self.combined is not None:
            return self.combined(list(completions), **columns).total
        scores: list[float] = []
        for i, row in enumerate(rows):
            part = {k: v[i * g:(i + 1) * g] for k, v in columns.items()}
            scores.extend(tasks.get_task(row["task"]).reward(list(completions[i * g:(i + 1) * g]), **part))
        return scores


class ScoreJudge:
    """A 0-100 judge on an OpenAI-compatible endpoint, through the ``llm`` reward's client (``LLMJudge``:
    its HTTP request, failure counting and cache)."""

    def __init__(self, config: JudgeConfig):
        self.client = LLMJudge(config)

    def score(self, question: str, gold: str, response: str) -> float:
        messages = [{"role": "system", "content": JUDGE_INSTRUCTIONS},
                    {"role": "user", "content": JUDGE_QUESTION.format(question=question, gold=gold, response=response)}]
        return self.client.ask(("score", question, gold, response), messages, parse_score)

    def __call__(self, rows, prompts, completions, columns, g) -> list[float]:
        jobs = [(prompts[i // g], _gold_text(rows[i // g]["solution"]), c) for i, c in enumerate(completions)]
        workers = self.client.config.max_workers
        if len(jobs) <= 1 or workers == 1:
            return [self.score(*j) for j in jobs]
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
            return list(pool.map(lambda j: self.score(*j), jobs))


def _gold_text(solution: Any) -> str:
    return solution if isinstance(solution, str) else json.dumps(solution)


# ----- the sampling loop -----------------------------------------------------------------------


@dataclass
class RowOutcome:
    """One prompt: its N completions, their scores, the index kept (None: none reached the threshold)."""

    id: str
    prompt: str
    completions: list[str]
    scores: list[float]
    best: int | None


def sample_and_score(model, processor, rows: Sequence[dict], scorer: Scorer, *, num_samples: int,
                     threshold: float, max_new_tokens: int = 256, temperature: float = 1.0,
                     top_p: float | None = None, top_k: int | None = None, batch_size: int = 4, seed: int = 0,
                     prompt_method: str | None = None, prompt_template: str | None = None,
                     max_prompt_length: int | None = None,
                     log: Callable[[int, int], None] | None = None) -> list[RowOutcome]:
    """N sampled completions per row (``batch_size`` prompts per ``generate`` call, seed ``seed + call``),
    scored by ``scorer``, the best >= ``threshold`` chosen per row (``select_best``)."""
    from paddlemix_r1.generation import generate

    if num_samples < 1 or batch_size < 1:
        raise ValueError(f"num_samples and batch_size must be >= 1, got {num_samples} and {batch_size}")
    g = num_samples
    family = model.config.model_type
    outcomes: list[RowOutcome] = []
    for call, start in enumerate(range(0, len(rows), batch_size)):
        chunk = list(rows[start:start + batch_size])
        prompts = [tasks.row_prompt(r, prompt_method, prompt_template, where=f"row {r.get('id')}") for r in chunk]
        convs = [tasks.build_conversation(p, len(r["images"])) for p, r in zip(prompts, chunk)]
        batch = processor(convs, [r["images"] for r in chunk], max_length=max_prompt_length, return_sizes=True)
        out = generate(model, batch, max_new_tokens=max_new_tokens, do_sample=True, temperature=temperature,
                       top_p=top_p, top_k=top_k, num_return_sequences=g, eos_token_id=processor.eos_token_id,
                       pad_token_id=processor.pad_token_id, seed=seed + call)
        texts = processor.batch_decode(out.completion_ids.numpy().tolist(), skip_special_tokens=True)
        columns = tasks.reward_columns(chunk, batch["original_sizes"], batch["resized_sizes"], family, g)
        columns["completion_length"] = out.completion_mask.sum(axis=1).numpy().tolist()
        scores = [float(s) for s in scorer(chunk, prompts, texts, columns, g)]
        if len(scores) != len(texts):
            raise ValueError(f"the scorer returned {len(scores)} scores for {len(texts)} completions")
        for i, (row, prompt) in enumerate(zip(chunk, prompts)):
            s = scores[i * g:(i + 1) * g]
            outcomes.append(RowOutcome(str(row.get("id")), prompt, texts[i * g:(i + 1) * g], s, select_best(s, threshold)))
        if log is not None:
            log(len(outcomes), len(rows))
    return outcomes


def sft_records(rows: Sequence[dict], outcomes: Sequence[RowOutcome]) -> list[dict]:
    """The ms-swift records of the rows that kept a completion, in row order."""
    return [sft_record(o.prompt, o.completions[o.best], r["images"], where=f"row {o.id}")
            for r, o in zip(rows, outcomes) if o.best is not None]


# ----- configuration and the command ------------------------------------------------------------


@dataclass
class RejectSampleConfig:
    """``paddlemix-r1 reject-sample`` settings (a YAML of these fields, e.g. configs/curr_reft_reject_sft_3b.yaml;
    command-line flags override it)."""

    model_path: str = ""
    """The checkpoint that samples (Curr-ReFT: the stage-3 checkpoint) and, with SFT, the one trained."""
    data_files: list[str] = field(default_factory=list)
    """Data files or data-config YAMLs (their ``train_datasets`` / ``datasets``), read by data.readers."""
    image_root: str = ""
    """Folder the rows' image paths are relative to (one for all files, or ':'-separated, one per file)."""
    task: str = "counting"
    """Task of rows without a ``task`` field (its prompt and, with scorer "rewards", its rewards)."""
    prompt_method: str | None = None
    """Prompt method of the rows' tasks (None: each task's training prompt)."""
    max_rows: int | None = None
    """Use only the first rows read (None: all)."""
    data_seed: int = 42
    """Seed of the data config's ``random:`` sampling (Curr-ReFT's data_seed)."""
    output: str = os.path.join("outputs", "reject_sft", "reject_sft.jsonl")
    """The ms-swift "messages" JSONL written (and ``.samples.jsonl`` / ``.summary.json`` beside it)."""
    num_samples: int = 4
    """Completions sampled per prompt (N)."""
    threshold: float = 0.0
    """Keep the best completion whose score is >= this (the scorer's units: reward sum, or 0-100)."""
    scorer: str = "rewards"
    """"rewards" (task rewards or ``reward_funcs``) or "judge" (0-100 score from ``judge_url``)."""
    reward_funcs: list[str] | None = None
    """With scorer "rewards": these registered rewards instead of each row's task's."""
    reward_weights: list[float] | None = None
    """Weights of ``reward_funcs`` (default 1 each)."""
    judge_url: str | None = None
    """OpenAI-compatible endpoint base (``{judge_url}/chat/completions``), e.g. http://127.0.0.1:8000/v1."""
    judge_model: str = "gpt-4o"
    """Model name sent to the judge (Curr-ReFT scored with GPT-4o)."""
    judge_api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the judge's bearer token (unset: no Authorization header)."""
    judge_timeout_s: float = 60.0
    judge_max_workers: int = 8
    max_new_tokens: int = 256
    temperature: float = 1.0
    top_p: float | None = None
    top_k: int | None = None
    batch_size: int = 4
    """Prompts per generate call (each with N completions)."""
    max_prompt_length: int | None = None
    seed: int = 0
    dtype: str = "float32"
    sft_steps: int = 0
    """SFT steps on the kept records after sampling (0: sample only)."""
    sft_data: str | None = None
    """Train on this ms-swift JSONL instead of sampling (e.g. Curr-ReFT's released cat_all_formatted.jsonl)."""
    sft_image_root: str | None = None
    """Folder relative image paths of ``sft_data`` are resolved against (None: the working directory)."""
    sft_learning_rate: float = 2e-7
    """Curr-ReFT reject_sft_all.sh: 2e-7."""
    sft_batch_size: int = 4
    freeze_vision: bool = False
    """Curr-ReFT: freeze_vit False (the vision tower trains too)."""
    sft_output_dir: str | None = None
    """Where the SFT model is saved (default: ``<output's folder>/sft-model``)."""

    def __post_init__(self) -> None:
        if self.scorer not in SCORERS:
            raise ValueError(f"scorer must be one of {SCORERS}, got {self.scorer!r}")
        if self.num_samples < 1 or self.batch_size < 1 or self.sft_batch_size < 1:
            raise ValueError("num_samples, batch_size and sft_batch_size must be >= 1")
        if self.sft_steps < 0:
            raise ValueError(f"sft_steps must be >= 0, got {self.sft_steps}")
        if not math.isfinite(self.threshold):
            raise ValueError(f"threshold must be finite, got {self.threshold}")
        if self.scorer == "judge" and not self.judge_url:
            raise ValueError("scorer 'judge' needs judge_url (an OpenAI-compatible endpoint base)")
        if self.scorer == "judge" and self.reward_funcs:
            raise ValueError("reward_funcs are for scorer 'rewards'; scorer 'judge' scores with the endpoint")
        if self.sft_data is None and not self.model_path:
            raise ValueError("model_path is required")
        if self.sft_data is None and not self.data_files:
            raise ValueError("data_files is required unless sft_data is given (SFT only)")
        if self.sft_data is not None and self.sft_steps == 0:
            raise ValueError("sft_data is given but sft_steps is 0: nothing to do")

    @classmethod
    def load(cls, path: str | None, overrides: Mapping[str, Any] | None = None) -> RejectSampleConfig:
        """Fields from the YAML ``path`` (unknown keys are an error naming the file), then ``overrides``."""
        values: dict[str, Any] = {}
        if path is not None:
            import yaml

            with open(path, encoding="utf-8") as f:
                loaded = yaml.safe_load(f) or {}
            if not isinstance(loaded, dict):
                raise ValueError(f"{path}: expected a mapping of RejectSampleConfig fields")
            values.update(loaded)
        values.update({k: v for k, v in (overrides or {}).items() if v is not None})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{path or 'overrides'}: unknown field(s) {unknown}; fields: {sorted(known)}")
        if isinstance(values.get("data_files"), str):
            values["data_files"] = [values["data_files"]]
        return cls(**values)


def _scorer(cfg: RejectSampleConfig) -> Scorer:
    if cfg.scorer == "judge":
        return ScoreJudge(JudgeConfig(base_url=cfg.judge_url, model=cfg.judge_model,
                                      api_key=os.environ.get(cfg.judge_api_key_env) or None,
                                      timeout_s=cfg.judge_timeout_s, max_workers=cfg.judge_max_workers))
    return RewardScorer(cfg.reward_funcs, cfg.reward_weights)


def _summary(cfg: RejectSampleConfig, outcomes: Sequence[RowOutcome], scorer: Scorer, seconds: float) -> dict:
    kept = [o for o in outcomes if o.best is not None]
    out: dict[str, Any] = {"prompts": len(outcomes), "kept": len(kept), "num_samples": cfg.num_samples,
                           "threshold": cfg.threshold, "scorer": cfg.scorer, "seconds": round(seconds, 1),
                           "mean_score": (sum(s for o in outcomes for s in o.scores)
                                          / max(1, sum(len(o.scores) for o in outcomes))),
                           "mean_kept_score": sum(o.scores[o.best] for o in kept) / max(1, len(kept))}
    if isinstance(scorer, ScoreJudge):
        c = scorer.client
        out["judge"] = {"model": cfg.judge_model, "calls": c.calls, "failures": c.failures,
                        "failure_reasons": dict(c.failure_reasons)}
    return out


def run_reject_sample(cfg: RejectSampleConfig, log: Callable[[str], None] = print) -> dict:
    """Sample, score, write the SFT JSONL (unless ``sft_data``), then SFT when ``sft_steps > 0``.

    Returns the summary (also written to ``<output>.summary.json``), with ``sft_loss`` and
    ``sft_output_dir`` when SFT ran."""
    import paddle

    from paddlemix_r1.data.readers import read_training_files
    from paddlemix_r1.models import from_pretrained
    from paddlemix_r1.processing import Processor

    paddle.seed(cfg.seed)
    proc = Processor.from_pretrained(cfg.model_path)
    model = from_pretrained(cfg.model_path, dtype=cfg.dtype)
    summary: dict[str, Any] = {}
    sft_path = cfg.sft_data
    if sft_path is None:
        rows = list(read_training_files(cfg.data_files, cfg.image_root, cfg.task, seed=cfg.data_seed))
        rows = rows[:cfg.max_rows] if cfg.max_rows is not None else rows
        tasks.check_prompt_method(rows, cfg.prompt_method)
        scorer = _scorer(cfg)
        t0 = time.perf_counter()
        outcomes = sample_and_score(
            model, proc, rows, scorer, num_samples=cfg.num_samples, threshold=cfg.threshold,
            max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k,
            batch_size=cfg.batch_size, seed=cfg.seed, prompt_method=cfg.prompt_method,
            max_prompt_length=cfg.max_prompt_length, log=lambda done, n: log(f"[reject-sample] {done}/{n} prompts"))
        sft_path = atomic.write_jsonl(cfg.output, sft_records(rows, outcomes))
        atomic.write_jsonl(f"{cfg.output}.samples.jsonl", [dataclasses.asdict(o) for o in outcomes])
        summary = _summary(cfg, outcomes, scorer, time.perf_counter() - t0)
        log(f"[reject-sample] kept {summary['kept']}/{summary['prompts']} prompts (threshold {cfg.threshold}) "
            f"-> {sft_path}" + (f"; judge failures {summary['judge']['failures']}/{summary['judge']['calls']}"
                                if "judge" in summary else ""))
    if cfg.sft_steps > 0:
        from paddlemix_r1.grpo.sft import read_sft_jsonl, run_sft

        examples = read_sft_jsonl(sft_path, cfg.sft_image_root)
        losses = run_sft(model, proc, examples, lambda r: r["conversation"], lambda r, rng: r["answer"],
                         cfg.sft_steps, batch_size=cfg.sft_batch_size, learning_rate=cfg.sft_learning_rate,
                         seed=cfg.seed, freeze_vision=cfg.freeze_vision)
        out_dir = cfg.sft_output_dir or os.path.join(os.path.dirname(os.path.abspath(cfg.output)), "sft-model")
        model.save_pretrained(out_dir)
        proc.save_pretrained(out_dir)
        summary.update({"sft_records": len(examples), "sft_loss": losses, "sft_output_dir": out_dir})
        log(f"[reject-sample] SFT {cfg.sft_steps} steps on {len(examples)} records, loss {losses[0]:.4f} -> "
            f"{losses[-1]:.4f}; model in {out_dir}")
    path = f"{cfg.output}.summary.json"
    atomic.write_json(path, summary, indent=1)
    return summary
