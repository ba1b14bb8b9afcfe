"""The ``accuracy`` reward: each row scored by the method its ``accu_reward_method`` column names.

VLM-R1 picks an accuracy method per data file (``--reward_method mcq:default``) and lets a row's
``accu_reward_method`` key override it; the data reader resolves that into the column, so this
reward sees one method name per completion (research §1.2). The methods, with the registry name of
the reward each dispatches to (the same name):

``default``       math_verify, then exact numbers, then choice letters, then a fuzzy ratio (answer_match)
``mcq``           the choice letter (answer_match)
``yes_no``        the first whole-word yes/no (answer_match)
``all_match``     equality after VLM-R1's clean_text (answer_match)
``math``          the ``math`` reward: math_verify with GeoQA normalisation (math_answer). VLM-R1's
                  ``math`` method (exact text, math_verify, then a hendrycks ``is_equiv`` on the last
                  ``\\boxed{}``) is covered by it: math_verify reads ``\\boxed{}`` and does the
                  hendrycks normalisations; unlike VLM-R1 a gold math_verify cannot parse raises.
``od_ap``, ``od_ap50``, ``odLength``, ``weighted_sum``   detection rewards (detection)
``llm``           an LLM judge (llm_judge)

Unlike VLM-R1, an unknown or missing method name raises ValueError naming the row (VLM-R1 silently
scores it with ``default``, so a typo such as "odlength" trains on a fuzzy text ratio). VLM-R1's
``map`` method (AP on the whole text, no answer block needed) is not offered: use ``od_ap``.

Rows are grouped by method and each group is scored by one call of its reward with the columns
sliced to the group (so a method that batches, such as the judge, sees its rows together); every
column must therefore hold one entry per completion (or be None).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from paddlemix_r1.rewards.answer_match import all_match_reward, make_default_reward, mcq_reward, yes_no_reward
from paddlemix_r1.rewards.columns import RewardFn, check_column, check_completions
from paddlemix_r1.rewards.detection import od_ap50_reward, od_ap_reward, od_length_reward, weighted_sum_reward
from paddlemix_r1.rewards.llm_judge import LLMJudge, make_llm_reward
from paddlemix_r1.rewards.math_answer import MathVerifier, make_math_reward

ACCURACY_METHODS = (
    "default", "mcq", "yes_no", "math", "all_match", "od_ap", "od_ap50", "odLength", "weighted_sum", "llm",
)  # fmt: skip


def accuracy_methods(verifier: MathVerifier | None = None, judge: LLMJudge | None = None) -> dict[str, RewardFn]:
    """Method name -> reward function; ``verifier`` / ``judge`` default to the process-wide ones."""
    return {
        "default": make_default_reward(verifier),
        "mcq": mcq_reward,
        "yes_no": yes_no_reward,
        "math": make_math_reward(verifier),
        "all_match": all_match_reward,
        "od_ap": od_ap_reward,
        "od_ap50": od_ap50_reward,
        "odLength": od_length_reward,
        "weighted_sum": weighted_sum_reward,
        "llm": make_llm_reward(judge),
    }


def _take(values: Any, rows: list[int], name: str, n: int) -> Any:
    if values is None:
        return None
    check_column(values, name, n, "accuracy")
    return [values[i] for i in rows]


def make_accuracy_reward(methods: Mapping[str, RewardFn] | None = None) -> RewardFn:
    """An ``accuracy`` reward over ``methods`` (default: ``accuracy_methods()``)."""
    table = dict(accuracy_methods() if methods is None else methods)

    def accuracy_reward(completions: list[str], *, accu_reward_method: Sequence[Any], **columns: Any) -> list[float]:
        """Each completion scored by its row's ``accu_reward_method`` (module docstring)."""
        check_completions(completions, "accuracy")
        n = len(completions)
        check_column(accu_reward_method, "accu_reward_method", n, "accuracy")
        groups: dict[str, list[int]] = {}
        for i, method in enumerate(accu_reward_method):
            if not isinstance(method, str) or method not in table:
                raise ValueError(f"accuracy: accu_reward_method[{i}] is {method!r}; expected one of {', '.join(table)}")
            groups.setdefault(method, []).append(i)
        scores = [0.0] * n
        for method, rows in groups.items():
            sub_columns = {name: _take(values, rows, name, n) for name, values in columns.items()}
            sub_scores = table[method]([completions[i] for i in rows], **sub_columns)
            if len(sub_scores) != len(rows):
                raise ValueError(f"accuracy: method {method!r} returned {len(sub_scores)} scores for {len(rows)} rows")
            for i, s in zip(rows, sub_scores):
                scores[i] = float(s)
        return scores

    return accuracy_reward


accuracy_reward = make_accuracy_reward()
