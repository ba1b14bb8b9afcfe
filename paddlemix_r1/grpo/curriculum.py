"""Curriculum GRPO (Curr-ReFT): stages run in sequence from one YAML recipe, each starting from the
previous stage's chosen checkpoint, with its reference model reset there.

Recipe (``configs/curr_reft_*.yaml``)::

    output_dir: outputs/curr_reft          # stage k (0-based) trains in <output_dir>/stage{k}-<name>
    model_name_or_path: Qwen/...           # the first stage's starting checkpoint ("tiny" builds one)
    defaults:                              # GRPOConfig fields shared by every stage
      max_prompt_length: 2048
    stages:
      - name: judge                        # [A-Za-z0-9_-]+, unique: directory names and overrides use it
        epochs: 1                          # or max_steps: N (one of the two; epochs -> steps from the rows)
        handoff: final                     # the checkpoint the next stage starts from: final | a step N
        eval_at_start: false               # also evaluate the starting checkpoint on the val rows
        eval:                              # per-stage evaluation (optional)
          data_files: [val.jsonl]          # any reader format (data/readers.py), tasks may mix
          image_root: data/images          # one root, or one per file (':'-separated)
          method: judge                    # prompt method (None: the stage's task_type, else each task's)
          sample_num: null                 # N rows drawn by a ``seed`` shuffle (null: all, in file order)
          batch_size: 8
          max_new_tokens: null             # null: the largest of the evaluated tasks' budgets
          seed: 42
        task: math                         # ...and any other GRPOConfig field of this stage
        task_type: judge
        reward_funcs: [judge, format]
        num_generations: 4

``model_name_or_path``, ``output_dir`` and ``resume_from_checkpoint`` of a stage are set by the
curriculum and may not appear in ``defaults`` or a stage.

Hand-off. Stage k+1 is a fresh ``GRPOTrainer`` whose ``model_name_or_path`` is stage k's chosen
checkpoint's ``model/`` directory; the trainer loads the policy AND the reference model from that
directory, so both start bit-identical to it (tests/grpo/test_curriculum.py checks this). The
optimizer, scheduler and sampler start afresh, as Curr-ReFT's separately launched stages do.

Resume. ``<output_dir>/curriculum_state.json`` (written atomically by rank 0) records each finished
stage, its hand-off directory and its figures. A rerun of the same command skips finished stages and
resumes the current one from its newest ``checkpoint-N`` (``resume_from_checkpoint: latest`` within
the stage directory), so a killed run continues at the stage and saved step it reached.

Under ``paddle.distributed.launch`` every rank runs ``run_curriculum``; rank 0 evaluates and writes
the state, summary and plot while the other ranks wait.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import math
import os
import re
import tempfile
import time
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml

from paddlemix_r1 import atomic
from paddlemix_r1.grpo.config import GRPOConfig

STATE_FILE = "curriculum_state.json"
SUMMARY_FILE = "curriculum_summary.json"
PLOT_FILE = "curriculum_reward.png"
CONTROLLED_FIELDS = ("model_name_or_path", "output_dir", "resume_from_checkpoint")
"""GRPOConfig fields the curriculum sets for each stage."""
STAGE_KEYS = ("name", "epochs", "handoff", "eval", "eval_at_start")
"""Stage keys that are not GRPOConfig fields."""
TOP_KEYS = ("output_dir", "model_name_or_path", "defaults", "stages")
_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
_GRPO_FIELDS = {f.name for f in dataclasses.fields(GRPOConfig)}


@dataclass
class EvalSpec:
    """Evaluation of one stage on its validation rows (``paddlemix_r1.eval.evaluator.evaluate``)."""

    data_files: list[str] = field(default_factory=list)
    """Validation files in any reader format (rows may name their own task); or ``data_config``."""
    data_config: str | None = None
    """A data-config YAML whose ``val_datasets:`` are the validation rows (Curr-ReFT's stage configs;
    ``data.readers.read_val_datasets``, sampled with ``seed``). Give it or ``data_files``."""
    image_root: str = ""
    """Folder the files' image paths are relative to: one for all, or one per file (':'-separated)."""
    method: str | None = None
    """Prompt method of every evaluated task; None: the stage's ``task_type``, else each task's training method."""
    sample_num: int | None = None
    """Evaluate N rows drawn by a ``seed`` shuffle of all the files' rows; None: every row, in file order."""
    batch_size: int = 8
    max_new_tokens: int | None = None
    """Generation budget; None: the largest ``max_new_tokens`` of the evaluated tasks."""
    seed: int = 42
    """Seed of the ``sample_num`` shuffle (greedy decoding needs none)."""


@dataclass
class StageConfig:
    """One stage: its GRPOConfig fields (``defaults`` merged in) and how it hands off."""

    name: str
    grpo: dict[str, Any]
    """GRPOConfig fields of the stage, without the curriculum-controlled ones."""
    epochs: float | None = None
    """Passes over the stage's rows; sets max_steps = ceil(epochs * rows / (prompts_per_step * ranks)).
    None: the stage's max_steps."""
    handoff: str | int = "final"
    """"final" (the stage's last checkpoint) or a step N whose checkpoint-N the next stage starts from."""
    eval: EvalSpec | None = None
    eval_at_start: bool = False
    """Also evaluate the stage's starting checkpoint (needs a checkpoint directory, not "tiny")."""

    def grpo_config(self, model_name_or_path: str, output_dir: str, **extra: Any) -> GRPOConfig:
        """The stage's GRPOConfig starting from ``model_name_or_path`` and writing to ``output_dir``."""
        fields = {**self.grpo, "model_name_or_path": model_name_or_path, "output_dir": output_dir, **extra}
        return GRPOConfig.from_dict(fields, source=f"stage {self.name!r}")


@dataclass
class CurriculumConfig:
    output_dir: str
    """Curriculum directory: the state file, summary, plot; stage k trains in ``stage{k}-<name>``."""
    model_name_or_path: str
    """The first stage's starting checkpoint ("tiny": a tiny random model built in its stage directory)."""
    stages: list[StageConfig] = field(default_factory=list)

    def stage_dir(self, index: int) -> str:
        return os.path.join(self.output_dir, f"stage{index}-{self.stages[index].name}")

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "curriculum") -> CurriculumConfig:
        """Parse and validate a recipe; ValueError naming the field (and stage) on any problem."""
        if not isinstance(d, dict):
            raise ValueError(f"{source}: expected a mapping with {', '.join(TOP_KEYS)}")
        unknown = sorted(set(d) - set(TOP_KEYS))
        if unknown:
            raise ValueError(f"{source}: unknown top-level key(s) {unknown}; known: {list(TOP_KEYS)} "
                             "(GRPOConfig fields shared by every stage go under 'defaults')")
        for key in ("output_dir", "model_name_or_path"):
            if not isinstance(d.get(key), str) or not d[key]:
                raise ValueError(f"{source}: {key!r} must be a non-empty string, got {d.get(key)!r}")
        defaults = d.get("defaults") or {}
        if not isinstance(defaults, dict):
            raise ValueError(f"{source}: 'defaults' must be a mapping of GRPOConfig fields, got {defaults!r}")
        _check_grpo_keys(defaults, f"{source}: defaults")
        raw_stages = d.get("stages")
        if not isinstance(raw_stages, list) or not raw_stages:
            raise ValueError(f"{source}: 'stages' must be a non-empty list of stage mappings")
        stages, names = [], set()
        for i, raw in enumerate(raw_stages):
            stage = _parse_stage(raw, defaults, f"{source}: stages[{i}]")
            if stage.name in names:
                raise ValueError(f"{source}: stages[{i}]: stage name {stage.name!r} is used twice")
            names.add(stage.name)
            if i == 0 and stage.eval_at_start and d["model_name_or_path"] == "tiny":
                raise ValueError(f"{source}: stages[0] ({stage.name!r}): eval_at_start needs a checkpoint directory "
                                 "as model_name_or_path, not 'tiny'")
            stages.append(stage)
        return cls(output_dir=d["output_dir"], model_name_or_path=d["model_name_or_path"], stages=stages)

    @classmethod
    def load(cls, path: str, overrides: list[str] | None = None) -> CurriculumConfig:
        """A recipe YAML plus ``key=value`` overrides (values parsed as YAML):

        ``output_dir=D`` / ``model_name_or_path=M``   the top-level keys;
        ``<GRPOConfig field>=v``                      that field in EVERY stage (max_steps replaces a
                                                      stage's epochs, epochs its max_steps);
        ``<stage>.<key>=v``                           one stage's GRPOConfig field or stage key
                                                      (``<stage>.eval.<key>=v`` for its eval block).
        """
        with open(path, encoding="utf-8") as f:
            d = yaml.safe_load(f)
        if not isinstance(d, dict):
            raise ValueError(f"{path}: expected a mapping with {', '.join(TOP_KEYS)}")
        for item in overrides or []:
            _apply_override(d, item)
        return cls.from_dict(d, source=path)


def _check_grpo_keys(fields: dict[str, Any], where: str) -> None:
    controlled = sorted(set(fields) & set(CONTROLLED_FIELDS))
    if controlled:
        raise ValueError(f"{where}: {controlled} are set by the curriculum (top-level output_dir / "
                         "model_name_or_path; stage directories and resume are managed)")
    unknown = sorted(set(fields) - _GRPO_FIELDS)
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {unknown}: neither GRPOConfig fields nor stage keys "
                         f"{list(STAGE_KEYS)}")


def _parse_eval(raw: Any, where: str) -> EvalSpec:
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: 'eval' must be a mapping with data_files, got {raw!r}")
    known = {f.name for f in dataclasses.fields(EvalSpec)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"{where}: eval: unknown key(s) {unknown}; known: {sorted(known)}")
    files = raw.get("data_files") or []
    if isinstance(files, str):
        files = [files]
    config = raw.get("data_config")
    if config is not None and (not isinstance(config, str) or files):
        raise ValueError(f"{where}: eval.data_config must be one YAML path, given instead of eval.data_files")
    if config is None and (not isinstance(files, list) or not files
                           or not all(isinstance(p, str) and p for p in files)):
        raise ValueError(f"{where}: eval.data_files must be a non-empty list of paths (or give eval.data_config), "
                         f"got {raw.get('data_files')!r}")
    spec = EvalSpec(**{**raw, "data_files": files})
    for name in ("batch_size", "sample_num", "max_new_tokens"):
        value = getattr(spec, name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ValueError(f"{where}: eval.{name} must be an integer >= 1, got {value!r}")
    if not isinstance(spec.image_root, str):
        raise ValueError(f"{where}: eval.image_root must be a string, got {spec.image_root!r}")
    return spec


def _parse_stage(raw: Any, defaults: dict[str, Any], where: str) -> StageConfig:
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: a stage must be a mapping, got {raw!r}")
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"{where}: 'name' must match [A-Za-z0-9_-]+, got {name!r}")
    where = f"{where} ({name!r})"
    own = {k: v for k, v in raw.items() if k not in STAGE_KEYS}
    _check_grpo_keys(own, where)
    epochs = raw.get("epochs")
    if epochs is not None:
        if isinstance(epochs, bool) or not isinstance(epochs, (int, float)) or epochs <= 0:
            raise ValueError(f"{where}: 'epochs' must be a number > 0, got {epochs!r}")
        if "max_steps" in own:
            raise ValueError(f"{where}: give 'epochs' or 'max_steps', not both")
    grpo = {**defaults, **own}
    if epochs is not None:
        grpo.pop("max_steps", None)
    handoff = raw.get("handoff", "final")
    if handoff != "final" and (isinstance(handoff, bool) or not isinstance(handoff, int) or handoff < 1):
        raise ValueError(f"{where}: 'handoff' must be 'final' or a checkpoint step >= 1, got {handoff!r}")
    eval_at_start = raw.get("eval_at_start", False)
    if not isinstance(eval_at_start, bool):
        raise ValueError(f"{where}: 'eval_at_start' must be true or false, got {eval_at_start!r}")
    spec = _parse_eval(raw["eval"], where) if raw.get("eval") is not None else None
    if eval_at_start and spec is None:
        raise ValueError(f"{where}: eval_at_start needs an 'eval' block")
    stage = StageConfig(name=name, grpo=grpo, epochs=epochs, handoff=handoff, eval=spec, eval_at_start=eval_at_start)
    try:  # every field value is checked now, not when the stage starts
        cfg = stage.grpo_config("tiny", os.path.join(tempfile.gettempdir(), "unused"))
    except (ValueError, TypeError) as e:
        raise ValueError(f"{where}: {e}") from None
    stage.grpo = {k: getattr(cfg, k) for k in grpo}  # values as GRPOConfig coerced them (YAML's "1e-6" -> 1e-06)
    if epochs is None and handoff != "final" and handoff > cfg.max_steps:
        raise ValueError(f"{where}: handoff step {handoff} is past the stage's max_steps={cfg.max_steps}")
    return stage


def _override_value(key: str, raw: str) -> Any:
    value = yaml.safe_load(raw)
    types = typing.get_type_hints(GRPOConfig)
    if types.get(key) is str and not isinstance(value, str):
        value = raw  # e.g. output_dir=123 stays a string
    return value


def _apply_override(d: dict[str, Any], item: str) -> None:
    if "=" not in item:
        raise ValueError(f"override {item!r} is not key=value")
    key, raw = item.split("=", 1)
    stages = d.get("stages") if isinstance(d.get("stages"), list) else []
    if key in ("output_dir", "model_name_or_path"):
        d[key] = raw
        return
    if "." not in key:
        if key == "epochs":
            value = yaml.safe_load(raw)
            for s in stages:
                s.pop("max_steps", None)
                s["epochs"] = value
            return
        if key not in _GRPO_FIELDS or key in CONTROLLED_FIELDS:
            raise ValueError(f"override {item!r}: {key!r} is not a GRPOConfig field a stage may set (or output_dir, "
                             "model_name_or_path, epochs); use <stage>.<key>=value for one stage")
        for s in stages:
            s[key] = _override_value(key, raw)
            if key == "max_steps":
                s.pop("epochs", None)
        return
    stage_name, _, rest = key.partition(".")
    matches = [s for s in stages if isinstance(s, dict) and s.get("name") == stage_name]
    if not matches:
        names = [s.get("name") for s in stages if isinstance(s, dict)]
        raise ValueError(f"override {item!r}: no stage named {stage_name!r} (stages: {names})")
    stage = matches[0]
    if rest.startswith("eval."):
        sub = rest[len("eval."):]
        if not isinstance(stage.get("eval"), dict):
            raise ValueError(f"override {item!r}: stage {stage_name!r} has no eval block to override")
        stage["eval"][sub] = yaml.safe_load(raw)
        return
    if rest not in STAGE_KEYS and (rest not in _GRPO_FIELDS or rest in CONTROLLED_FIELDS):
        raise ValueError(f"override {item!r}: {rest!r} is neither a GRPOConfig field a stage may set nor a stage key "
                         f"{[k for k in STAGE_KEYS if k != 'name']}")
    if rest == "name":
        raise ValueError(f"override {item!r}: stage names cannot be overridden (they name the stage directories)")
    stage[rest] = _override_value(rest, raw) if rest in _GRPO_FIELDS else yaml.safe_load(raw)
    if rest == "max_steps":
        stage.pop("epochs", None)
    elif rest == "epochs":
        stage.pop("max_steps", None)


# ----- running -----
@dataclass
class StageResult:
    """What one stage did (also its record in the state file)."""

    name: str
    steps: int
    handoff: str
    """The ``model/`` directory the next stage starts from."""
    reward_start: float
    reward_end: float
    """Mean reward of the first / last ``reward_window`` steps of the stage's history."""
    reward_curve: list[float]
    seconds: float
    """Wall time of the process that finished the stage (training + evaluation)."""
    resumed_from_step: int = 0
    eval_start: dict[str, Any] | None = None
    eval_end: dict[str, Any] | None = None


def reward_window(n: int) -> int:
    """Steps averaged for "reward start" and "reward end": a tenth of the stage, 1 to 20 steps."""
    return max(1, min(20, n // 10))


def load_state(cfg: CurriculumConfig) -> dict[str, Any]:
    """The state file of ``cfg.output_dir`` (a new one if absent); ValueError if it lists other stages."""
    path = os.path.join(cfg.output_dir, STATE_FILE)
    names = [s.name for s in cfg.stages]
    if not os.path.exists(path):
        return {"stages": names, "records": {}}
    with open(path, encoding="utf-8") as f:
        state = json.load(f)
    if state.get("stages") != names:
        raise ValueError(f"{path} is the state of stages {state.get('stages')}; this recipe has {names}. Use another "
                         "output_dir for a different curriculum")
    return state


def handoff_step(stage: StageConfig, cfg: GRPOConfig) -> int:
    """The step whose checkpoint hands off; ValueError if the stage would not keep that checkpoint."""
    if stage.handoff == "final":
        return cfg.max_steps
    n = int(stage.handoff)
    where = f"stage {stage.name!r}: handoff step {n}"
    if n > cfg.max_steps:
        raise ValueError(f"{where} is past the stage's max_steps={cfg.max_steps}")
    if n == cfg.max_steps:
        return n
    if not cfg.save_steps or n % cfg.save_steps:
        raise ValueError(f"{where} is never saved: save_steps={cfg.save_steps} (checkpoints every save_steps steps and "
                         "at the end); choose a multiple of save_steps")
    later = cfg.max_steps // cfg.save_steps - n // cfg.save_steps + (1 if cfg.max_steps % cfg.save_steps else 0)
    if cfg.save_total_limit > 0 and later >= cfg.save_total_limit:
        raise ValueError(f"{where}: {later} checkpoint(s) are written after it and save_total_limit="
                         f"{cfg.save_total_limit} keeps the newest {cfg.save_total_limit}, so it would be deleted; "
                         f"set save_total_limit: 0 (keep all) or >= {later + 1}")
    return n


def _eval_rows(spec: EvalSpec, default_task: str):
    """The validation rows as ``EvalRow`` s grouped by task ({task: rows}), after ``sample_num``."""
    from paddlemix_r1.data.readers import read_sourced_rows, read_val_datasets
    from paddlemix_r1.eval.data import EvalRow, select_rows

    if spec.data_config is not None:
        val = read_val_datasets(spec.data_config, spec.image_root, default_task, check_images="none", seed=spec.seed)
        sourced = [(f"{spec.data_config}: val row {r['id']}", r) for r in val]
    else:
        sourced, _ = read_sourced_rows(spec.data_files, spec.image_root, default_task, check_images="none")
    rows = []
    for index, (where, row) in enumerate(sourced):
        if len(row["images"]) != 1:
            raise ValueError(f"{where}: evaluation reads one image per row, got {len(row['images'])}")
        rows.append(EvalRow(f"val/{index}", row["images"][0], row["problem"], row["solution"], where,
                            row.get("normal_caption"), row))
    grouped: dict[str, list] = {}
    for row in select_rows(rows, spec.sample_num, spec.seed):
        grouped.setdefault(row.fields["task"], []).append(row)
    return grouped


def evaluate_checkpoint(spec: EvalSpec, model_dir: str, default_task: str, default_method: str | None,
                        output_dir: str, label: str, dtype: str | None = None) -> dict[str, Any]:
    """Accuracy of ``model_dir`` on the stage's validation rows, per task and overall (greedy decoding, the
    evaluators' generate_fn and metric). Returns {"accuracy", "correct", "n", "by_task": {task: accuracy}}."""
    from paddlemix_r1.eval.cli import build_generate_fn, resolve_image_processor, resolve_model_family
    from paddlemix_r1.eval.evaluator import evaluate
    from paddlemix_r1.tasks import get_task

    grouped = _eval_rows(spec, default_task)
    budget = spec.max_new_tokens or max(get_task(t).max_new_tokens for t in grouped)
    args = argparse.Namespace(model_path=model_dir, dtype=dtype, num_samples=1, max_new_tokens=budget,
                              temperature=1.0, top_p=None, seed=spec.seed, model_family=None, min_pixels=None,
                              max_pixels=None)
    needs_boxes = any(get_task(t).uses_boxes for t in grouped)
    image_processor = resolve_image_processor(args) if needs_boxes else None
    family = resolve_model_family(args) if needs_boxes else None
    generate_fn = build_generate_fn(args, image_processor)
    correct = n = 0
    by_task = {}
    for task, rows in grouped.items():
        method = spec.method or default_method or get_task(task).train_method
        s = evaluate(rows, generate_fn, task, method=method, dataset=f"{label}_{task}", batch_size=spec.batch_size,
                     model_family=family, resize=image_processor.resized_size if image_processor else None,
                     output_dir=output_dir, run_name=f"{label}_{task}_{method}", progress=False,
                     settings={"model_path": model_dir})
        correct, n = correct + s.correct, n + s.n
        by_task[task] = s.accuracy
    del generate_fn
    gc.collect()
    return {"accuracy": correct / n, "correct": correct, "n": n, "by_task": by_task}


def run_curriculum(cfg: CurriculumConfig,
                   on_trainer: Callable[[StageConfig, Any], None] | None = None) -> list[StageResult]:
    """Run (or resume) every stage in order; write the state file, the summary and the plot.

    ``on_trainer(stage, trainer)`` is called with each stage's fresh ``GRPOTrainer`` before it trains
    (tests inspect the hand-off there, or stop a stage part-way).
    """
    from paddlemix_r1 import distributed as dist
    from paddlemix_r1.grpo import checkpoint as ckpt
    from paddlemix_r1.grpo.trainer import GRPOTrainer, load_dataset

    first = cfg.stages[0].grpo_config(cfg.model_name_or_path, cfg.stage_dir(0))
    env = dist.init_distributed(first.device, first.sync_timeout)
    if env.is_main:
        os.makedirs(cfg.output_dir, exist_ok=True)
    dist.barrier("curriculum output_dir")
    state = load_state(cfg)
    state_path = os.path.join(cfg.output_dir, STATE_FILE)

    def save_state() -> None:
        if env.is_main:
            atomic.write_json(state_path, state)

    start = cfg.model_name_or_path
    results: list[StageResult] = []
    for i, stage in enumerate(cfg.stages):
        record = state["records"].setdefault(stage.name, {})
        stage_dir = cfg.stage_dir(i)
        if record.get("status") == "done":
            if not os.path.exists(os.path.join(record["handoff"], "config.json")):
                raise FileNotFoundError(f"{state_path}: stage {stage.name!r} is done but its hand-off "
                                        f"{record['handoff']} is gone; remove the stage's record to retrain it")
            results.append(StageResult(**record["result"]))
            start = record["handoff"]
            continue
        t0 = time.perf_counter()
        grpo = stage.grpo_config(start, stage_dir)
        rows = None
        if stage.epochs is not None:
            rows = load_dataset(grpo)
            per_step = grpo.prompts_per_step * env.world_size
            grpo = dataclasses.replace(grpo, max_steps=max(1, math.ceil(stage.epochs * len(rows) / per_step)))
        n_handoff = handoff_step(stage, grpo)
        if ckpt.list_checkpoints(stage_dir):
            grpo = dataclasses.replace(grpo, resume_from_checkpoint="latest")
        if stage.eval_at_start and "eval_start" not in record:
            record["eval_start"] = _evaluate_on_main(stage, start, grpo, cfg, f"{stage.name}_start", env)
            save_state()
        trainer = GRPOTrainer(grpo, dataset=rows)
        resumed_from = trainer.step
        if env.is_main and resumed_from:
            print(f"[curriculum] stage {stage.name!r}: resuming at step {resumed_from} of {grpo.max_steps}")
        if on_trainer is not None:
            on_trainer(stage, trainer)
        history = trainer.train()
        del trainer
        gc.collect()
        handoff = os.path.join(stage_dir, f"checkpoint-{n_handoff}", "model")
        if not os.path.exists(os.path.join(handoff, "config.json")):
            raise FileNotFoundError(f"stage {stage.name!r}: hand-off checkpoint {handoff} was not written")
        eval_end = _evaluate_on_main(stage, handoff, grpo, cfg, f"{stage.name}_end", env) if stage.eval else None
        curve = [float(h["reward"]) for h in history]
        w = reward_window(len(curve))
        result = StageResult(name=stage.name, steps=grpo.max_steps, handoff=handoff,
                             reward_start=float(sum(curve[:w]) / w), reward_end=float(sum(curve[-w:]) / w),
                             reward_curve=curve, seconds=round(time.perf_counter() - t0, 1),
                             resumed_from_step=resumed_from, eval_start=record.get("eval_start"), eval_end=eval_end)
        record.update(status="done", handoff=handoff, result=dataclasses.asdict(result))
        save_state()
        dist.barrier(f"curriculum stage {stage.name} done")
        results.append(result)
        start = handoff
    if env.is_main:
        write_summary(cfg, results)
    return results


def _evaluate_on_main(stage: StageConfig, model_dir: str, grpo: GRPOConfig, cfg: CurriculumConfig, label: str,
                      env) -> dict[str, Any] | None:
    """Rank 0 evaluates; the other ranks wait (and get None)."""
    from paddlemix_r1 import distributed as dist

    out = None
    if env.is_main:
        out = evaluate_checkpoint(stage.eval, model_dir, grpo.task, grpo.task_type,
                                  os.path.join(cfg.output_dir, "eval"), label, dtype=grpo.dtype)
    dist.barrier(f"curriculum eval {label}")
    return out


def _fmt_eval(e: dict[str, Any] | None) -> str:
    return "-" if e is None else f"{e['accuracy']:.3f} ({e['correct']}/{e['n']})"


def format_summary(results: list[StageResult]) -> str:
    """The table: stage, steps, reward start -> end, eval accuracy at start / end, seconds."""
    header = ("stage", "steps", "reward start -> end", "eval at start", "eval at end", "seconds")
    lines = [(r.name, str(r.steps), f"{r.reward_start:.3f} -> {r.reward_end:.3f}", _fmt_eval(r.eval_start),
              _fmt_eval(r.eval_end), f"{r.seconds:.1f}" + (f" (resumed at {r.resumed_from_step})"
                                                          if r.resumed_from_step else "")) for r in results]
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*header), "  ".join("-" * w for w in widths), *(fmt.format(*x) for x in lines)])


def write_summary(cfg: CurriculumConfig, results: list[StageResult]) -> str:
    """``curriculum_summary.json`` and ``curriculum_reward.png`` (every stage's reward curve, one after
    the other, stage boundaries marked) in ``cfg.output_dir``; returns the table."""
    from paddlemix_r1.demo import plot_curve

    table = format_summary(results)
    atomic.write_json(os.path.join(cfg.output_dir, SUMMARY_FILE),
                      {"stages": [dataclasses.asdict(r) for r in results], "table": table})
    curve, segments = [], []
    for r in results:
        segments.append((len(curve), r.name))
        curve.extend(r.reward_curve)
    if curve:
        plot_curve(curve, os.path.join(cfg.output_dir, PLOT_FILE), "GRPO mean reward by curriculum stage",
                   segments=segments)
    return table
