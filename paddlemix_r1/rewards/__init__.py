"""Rewards: pure functions ``fn(completions: list[str], **columns) -> list[float]`` and a registry.

Registered names (``list_rewards()``), the columns each reads besides ``completions``, and its range:

REC, counting, geometry
``format``        none. The completion is ``<think>...</think>\\s*<answer>...</answer>``. {0, 1}
``rec_format``    none. ``format``, and the answer holds a box. {0, 1}
``rec_iou``       solution, image_size, model_family, resized_size. IoU of the answered box with the
                  gold box, in original pixels. [0, 1]
``rec_acc``       the same columns. That IoU is >= 0.5. {0, 1}
``counting``      solution. The answered integer equals the gold count. {0, 1}
``math``          solution. math_verify says the answer equals the gold ("140°", LaTeX, "2sqrt(3)",
                  choice letters). {0, 1}

VLM-R1's accuracy methods, under VLM-R1's own names (``accuracy`` module; research §1.3). ``math`` is
the reward above: VLM-R1's ``math`` method maps onto it, so the two names never disagree.
``default``       solution. math_verify, then exact numbers, then choice letters, then a fuzzy text
                  ratio. [0, 1]
``mcq``           solution. The answered choice letter is the gold's. {0, 1}
``yes_no``        solution. The first whole-word yes/no is the gold's ("not" is not "no"). {0, 1}
``all_match``     solution. Equal after VLM-R1's clean_text. {0, 1}
``od_ap``         solution (a fenced JSON box list or None); optional model_family, image_size,
                  resized_size. COCO AP@[.5:.95] x label precision. [0, 1]
``od_ap50``       the same columns. COCO AP@.5 x label precision. [0, 1]
``odLength``      the same columns. ``od_ap`` x min(1, gold boxes / answered boxes). [0, 1]
``weighted_sum``  the same columns. 0.7 matched IoU + 0.3 completeness. [0, 1]
``llm``           solution. An OpenAI-compatible judge says it matches (``llm_judge``: endpoint from
                  ``OPENAI_BASE_URL`` / ``OPENAI_API_BASE``). A failure scores 0 and is counted in
                  ``default_judge().failures``. {0, 1}
``accuracy``      accu_reward_method (one of the ten names above per row), plus the columns of the
                  methods it names. Each row is scored by its method. [0, 1]

Curr-ReFT's curriculum stages (``curr_reft`` module; research Part 1 §1.4), rows of task detection,
classify or math with ``<answer>`` golds
``judge``         solution. The answer's yes/no (yes/true/correct vs no/false/incorrect) is the gold's. {0, 1}
``choice``        solution. The set of option letters A-E is the gold's (order-insensitive). {0, 1}
``open``          solution, task; detection rows also model_family, image_size, resized_size.
                  detection: IoU > 0.5 {0, 1}; classify: token-set Jaccard [0, 1]; math: math_verify {0, 1}
``curr_format``   task, solution. ``format``, and a JSON box in the answer of detection rows whose
                  gold is a box. {0, 1}

RACRO's caption reward (``reasoner`` module; research Part 2)
``reasoner``      problem, solution. Mean correctness of a frozen text reasoner's last ``\\boxed{}`` answers
                  to the question given the completion as the image's caption (in-process or an
                  OpenAI-compatible server, ``set_default_reasoner``). A failed request or an answer without
                  ``\\boxed{}`` scores 0 and is counted (``Reasoner.stats()``). [0, 1]

VLM-R1's shaping rewards
``length``        completion_length (token count) and ``accuracy``'s columns. Cosine length reward
                  on the row's real accuracy. [-0.5, 1]
``repetition``    none. -(repeated fraction) of box items or word 6-grams. [-1, 0]

Columns are the dataset row fields as lists, one entry per completion; see each module for the
columns it reads. Every training reward reads only the completion's last closed ``<answer>`` block:
a completion without one scores 0 (the lenient whole-text reading is for ``baseline`` evaluation;
``parsing`` module docstring). No reward raises on any completion text; a missing column or a
malformed gold raises, naming the row.
"""

from paddlemix_r1.rewards.accuracy import ACCURACY_METHODS, accuracy_methods, make_accuracy_reward
from paddlemix_r1.rewards.coords import (
    box_iou,
    model_box_to_original,
    normalized_to_original,
    original_box_to_model,
    original_to_normalized,
    original_to_resized,
    resized_to_original,
)
from paddlemix_r1.rewards.counting import counting_reward
from paddlemix_r1.rewards.curr_reft import (
    choice_reward,
    curr_format_reward,
    judge_reward,
    make_open_reward,
    open_reward,
)
from paddlemix_r1.rewards.format_reward import format_reward, rec_format_reward
from paddlemix_r1.rewards.llm_judge import JudgeConfig, LLMJudge, default_judge, set_default_judge
from paddlemix_r1.rewards.math_answer import MathVerifier, make_math_reward, math_reward
from paddlemix_r1.rewards.parsing import answer_text, extract_answer, parse_box, parse_count
from paddlemix_r1.rewards.reasoner import (
    Reasoner,
    ReasonerConfig,
    default_reasoner,
    make_reasoner_reward,
    reasoner_reward,
    set_default_reasoner,
)
from paddlemix_r1.rewards.rec import rec_acc_reward, rec_iou_reward
from paddlemix_r1.rewards.registry import (
    RewardFn,
    RewardScores,
    WeightedReward,
    get_reward,
    list_rewards,
    register_reward,
)

# Curr-ReFT's stage rewards are registered here rather than in ``registry``, which keeps that module's
# imports as they are; importing any ``paddlemix_r1.rewards`` module runs this first.
register_reward("judge", judge_reward)
register_reward("choice", choice_reward)
register_reward("open", open_reward)
register_reward("curr_format", curr_format_reward)

__all__ = [
    "ACCURACY_METHODS",
    "JudgeConfig",
    "LLMJudge",
    "MathVerifier",
    "Reasoner",
    "ReasonerConfig",
    "RewardFn",
    "RewardScores",
    "WeightedReward",
    "accuracy_methods",
    "answer_text",
    "box_iou",
    "choice_reward",
    "counting_reward",
    "curr_format_reward",
    "default_judge",
    "default_reasoner",
    "extract_answer",
    "format_reward",
    "get_reward",
    "judge_reward",
    "list_rewards",
    "make_accuracy_reward",
    "make_math_reward",
    "make_open_reward",
    "make_reasoner_reward",
    "math_reward",
    "model_box_to_original",
    "normalized_to_original",
    "open_reward",
    "original_box_to_model",
    "original_to_normalized",
    "original_to_resized",
    "parse_box",
    "parse_count",
    "reasoner_reward",
    "rec_acc_reward",
    "rec_format_reward",
    "rec_iou_reward",
    "register_reward",
    "resized_to_original",
    "set_default_judge",
    "set_default_reasoner",
]
