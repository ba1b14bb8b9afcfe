"""Tasks: each owns a row schema, prompt templates by method, its training rewards, an answer parser
and an evaluation metric; training, the eval CLIs and the demo go through them.

``rec`` (REC boxes), ``counting`` (CLEVR / SuperCLEVR), ``geoqa`` (geometry, math_verify) and
``general`` (VLM-R1's own-data JSONL, scored by each row's ``accu_reward_method``) and ``ovd``
(open-vocabulary detection: box lists, COCO mAP / AP50 and greedy P/R over the set), and Curr-ReFT's
``detection``, ``classify`` and ``math``, each with the curriculum's prompt methods ``judge``, ``choice``
and ``open`` (``STAGE_METHODS``, also the names of their accuracy rewards). The one prompt
table is ``tasks/prompts.py`` (``PROMPTS``, keyed ``(task, method)``).

    task = get_task("counting")
    task.prompt(row, "r1")            # the evaluation prompt; task.prompt(row) the training one
    task.parse_solution(3)            # the gold in canonical form
    task.parse_answer(completion)     # what a completion answers
    task.score(completion, gold, ScoreContext(...))   # the evaluation metric
    task.reward(completions, **columns)               # the training rewards, weighted
"""

from paddlemix_r1.tasks.base import SampleScore, ScoreContext, Task, build_conversation
from paddlemix_r1.tasks.captioner import CaptionerTask
from paddlemix_r1.tasks.counting import CountingTask
from paddlemix_r1.tasks.curr_reft import STAGE_METHODS, ClassifyTask, DetectionTask, MathTask
from paddlemix_r1.tasks.general import GeneralTask
from paddlemix_r1.tasks.geoqa import GeoQATask
from paddlemix_r1.tasks.ovd import OvdTask
from paddlemix_r1.tasks.prompts import PROMPTS, PromptTemplate, get_prompt, methods_of
from paddlemix_r1.tasks.rec import RecTask
from paddlemix_r1.tasks.rows import (
    DEFAULT_ACCURACY_METHOD,
    check_prompt_method,
    get_task,
    list_tasks,
    normalize_rows,
    register_task,
    reward_columns,
    row_accuracy_method,
    row_conversation,
    row_prompt,
    row_task,
)

for _task in (RecTask(), CountingTask(), GeoQATask(), GeneralTask(), OvdTask(), DetectionTask(), ClassifyTask(),
              MathTask()):
    register_task(_task)
register_task(CaptionerTask())  # RACRO's captioner (tasks/captioner.py)

__all__ = [
    "DEFAULT_ACCURACY_METHOD",
    "PROMPTS",
    "STAGE_METHODS",
    "ClassifyTask",
    "CountingTask",
    "DetectionTask",
    "GeneralTask",
    "GeoQATask",
    "MathTask",
    "OvdTask",
    "PromptTemplate",
    "RecTask",
    "SampleScore",
    "ScoreContext",
    "Task",
    "build_conversation",
    "check_prompt_method",
    "get_prompt",
    "get_task",
    "list_tasks",
    "methods_of",
    "normalize_rows",
    "register_task",
    "reward_columns",
    "row_accuracy_method",
    "row_conversation",
    "row_prompt",
    "row_task",
]
