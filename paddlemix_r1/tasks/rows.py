"""Rows as training and evaluation use them: which task owns a row, its prompt, its reward columns.

The row format is the data readers' (``paddlemix_r1.data.readers``)::

    id                  str
    images              list of image paths (or PIL images, synthetic rows), in prompt order
    problem             the question, without template or "<image>" placeholders
    solution            the gold answer in the owning task's canonical form (``Task.parse_solution``)
    task                the owning task's name (the row's own ``task`` field, else the run's default)
    accu_reward_method  the VLM-R1 accuracy method of the row (its own, else its file's
                        ``reward_method``, else "default"); the ``accuracy`` reward dispatches on it
    ...                 every other field of the source row, passed to the rewards as a column
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from paddlemix_r1.rewards.accuracy import ACCURACY_METHODS
from paddlemix_r1.tasks.base import Task, build_conversation, image_count
from paddlemix_r1.tasks.prompts import get_prompt

DEFAULT_ACCURACY_METHOD = "default"
"""VLM-R1: a file without a ``--reward_method`` entry is scored with the ``default`` method."""

NOT_REWARD_COLUMNS = ("images",)
"""Row fields not handed to the reward functions (image paths or decoded images)."""

_REGISTRY: dict[str, Task] = {}


def register_task(task: Task, *, overwrite: bool = False) -> Task:
    """Add ``task`` under ``task.name``; re-registering a name raises unless ``overwrite``."""
    if task.name in _REGISTRY and not overwrite:
        raise ValueError(f"task {task.name!r} is already registered (pass overwrite=True to replace it)")
    _REGISTRY[task.name] = task
    return task


def get_task(name: str) -> Task:
    """The task registered under ``name``; ValueError listing the known tasks if none."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown task {name!r}; tasks: {', '.join(list_tasks())}") from None


def list_tasks() -> list[str]:
    """Registered task names, sorted."""
    return sorted(_REGISTRY)


def row_task(row: Mapping[str, Any], default: str, where: str) -> Task:
    """The task owning ``row``: its own ``task`` field when set, else ``default``."""
    name = row.get("task")
    if name is None or name == "":
        name = default
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"{where}: field 'task' must name a task ({', '.join(list_tasks())}), got {name!r}")
    return _REGISTRY[name]


def row_accuracy_method(row: Mapping[str, Any], file_method: str | None, where: str) -> str:
    """The row's ``accu_reward_method`` when set (one of ``rewards.accuracy.ACCURACY_METHODS``), else the
    file's method, else "default"."""
    method = row.get("accu_reward_method")
    if method is None:
        return file_method or DEFAULT_ACCURACY_METHOD
    if not isinstance(method, str) or method not in ACCURACY_METHODS:
        raise ValueError(f"{where}: field 'accu_reward_method' must be one of the accuracy methods "
                         f"({', '.join(ACCURACY_METHODS)}), got {method!r}")
    return method


def normalize_rows(rows: Sequence[Mapping[str, Any]], default_task: str,
                   accuracy_method: str | None = None) -> list[dict[str, Any]]:
    """Rows built in code (synthetic sets, a dataset handed to the trainer) checked and completed as the
    readers complete file rows: ``task`` resolved, ``solution`` in the task's canonical form,
    ``accu_reward_method`` set. Returns new dicts; ValueError naming the row on a malformed one."""
    out = []
    for i, row in enumerate(rows):
        where = f"row {i}" + (f" (id {row['id']!r})" if "id" in row else "")
        for key in ("images", "problem", "solution"):
            if row.get(key) is None:
                raise ValueError(f"{where}: missing field {key!r} (fields: {sorted(row)})")
        task = row_task(row, default_task, where)
        solution = task.parse_solution(row["solution"], f"{where}: field 'solution'")
        images = row["images"] if isinstance(row["images"], list) else [row["images"]]
        out.append({**row, "images": images, "solution": solution, "task": task.name,
                    "accu_reward_method": row_accuracy_method(row, accuracy_method, where)})
    return out


def check_prompt_method(rows: Sequence[Mapping[str, Any]], method: str | None) -> None:
    """``method`` (GRPOConfig.task_type) must be a prompt method of every task in ``rows``."""
    if method is None:
        return
    for name in sorted({r["task"] for r in rows}):
        try:
            get_prompt(name, method)
        except ValueError as e:
            raise ValueError(f"task_type {method!r} is not a prompt of every task in the dataset: {e}") from None


def row_prompt(row: Mapping[str, Any], method: str | None = None, template: str | None = None,
               where: str = "row") -> str:
    """The question text of ``row``: ``template`` (a custom string with ``{Question}``) when given, else
    its task's template for ``method`` (None: the task's training method)."""
    if template is not None:
        return template.format(Question=row["problem"])
    return get_task(row["task"]).prompt(row, method, where)


def row_conversation(row: Mapping[str, Any], method: str | None = None, template: str | None = None,
                     where: str = "row") -> list[dict[str, Any]]:
    """The row's chat (training, the demo and SFT): its task's ``conversation``, or with ``template`` (a
    custom string with ``{Question}``) one user turn with the row's images then that text."""
    if template is None:
        return get_task(row["task"]).conversation(row, method, where)
    return build_conversation(row_prompt(row, method, template, where), image_count(row))


def reward_columns(rows: Sequence[Mapping[str, Any]], image_sizes: Sequence[Sequence[Sequence[int]]],
                   resized_sizes: Sequence[Sequence[Sequence[int]]], model_family: str,
                   g: int) -> dict[str, list[Any]]:
    """The columns the reward functions receive for ``rows``, each repeated for the G completions.

    Every row field but ``images`` (the union over the rows; a field a row lacks is None), plus the
    coordinate frames the REC rewards read: ``image_size`` and ``resized_size`` of the row's FIRST
    image (``image_sizes[i]`` / ``resized_sizes[i]``: (W, H) per image of row i, as the Processor
    returns them) and ``model_family``.
    """
    keys = [k for k in dict.fromkeys(k for r in rows for k in r) if k not in NOT_REWARD_COLUMNS]
    cols: dict[str, list[Any]] = {k: [r.get(k) for r in rows for _ in range(g)] for k in keys}
    cols["image_size"] = [list(s[0]) for s in image_sizes for _ in range(g)]
    cols["resized_size"] = [list(s[0]) for s in resized_sizes for _ in range(g)]
    cols["model_family"] = [model_family] * (len(rows) * g)
    return cols
