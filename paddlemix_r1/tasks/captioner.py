"""RACRO's captioner task: the policy describes the image for a question it must not answer; a frozen text
reasoner then answers from the caption alone, and that answer's correctness is the caption's reward
(``rewards/reasoner.py``).

Rows (``data/virl39k.py``)::

    problem    the question without its "<image>" tags (the row format's problem)
    question   the question as RACRO keeps it, with the "<image>" tags marking where the images go; the
               reasoner prompt gets this text, tags included, as RACRO's does
    solution   the gold answer, an outer ``\\boxed{}`` stripped

Prompts (verl-main ``examples/data_preprocess/virl39k.py``; the same strings as VLMEvalKit's ``query_cond_3``):
system ``CAPTIONER_SYSTEM``, user ``"Question: {question}\\nPlease describe the image. DO NOT try to answer the
question!"`` with each "<image>" tag replaced by the image itself (``conversation``). No format reward and no
caption-length reward: RACRO has none.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from paddlemix_r1.rewards.reasoner import default_reasoner, make_reasoner_reward, strip_boxed
from paddlemix_r1.tasks.base import SampleScore, ScoreContext, Task
from paddlemix_r1.tasks.prompts import PromptTemplate

IMAGE_TAG = "<image>"
CAPTIONER_SYSTEM = ("You are given an image and a relevant question. Based on the query, please describe the image in "
                    "detail. Do not try to answer the question.")
_SOURCE = "RACRO verl-main/examples/data_preprocess/virl39k.py (= VLMEvalKit query_cond_3)"
PROMPTS = {
    "caption": PromptTemplate("Question: {Question}\nPlease describe the image. DO NOT try to answer the question!",
                              _SOURCE),
}
"""The captioner's prompt methods (kept here, not in tasks/prompts.py: its prompts come with a system turn)."""


def question_text(row: Mapping[str, Any]) -> str:
    """RACRO's question of a row: its ``question`` (with "<image>" tags) when present, else ``problem``."""
    question = row.get("question")
    return question if isinstance(question, str) and question.strip() else row["problem"]


class CaptionerTask(Task):
    name = "captioner"
    train_method = "caption"
    rewards = {"reasoner": 1.0}  # RACRO: the reasoner's correctness only
    max_new_tokens = 8192  # RACRO: max_response_length 8192 (captions), VLMEvalKit max_new_tokens 8192

    @property
    def methods(self) -> tuple[str, ...]:
        return tuple(PROMPTS)

    def template(self, method: str | None = None) -> PromptTemplate:
        name = method or self.train_method
        if name not in PROMPTS:
            raise ValueError(f"task 'captioner' has no prompt method {name!r}; methods: {list(PROMPTS)}")
        return PROMPTS[name]

    def prompt(self, row: Mapping[str, Any], method: str | None = None, where: str = "row") -> str:
        """The user text with the question as RACRO keeps it ("<image>" tags included)."""
        return self.template(method).format({"problem": question_text(row)}, where)

    def conversation(self, row: Mapping[str, Any], method: str | None = None, where: str = "row") -> list[dict]:
        """System + user turn, RACRO's: the user text split at its "<image>" tags, one image part per tag
        (RACRO's rl_dataset splits the content the same way). Tags must match the row's images."""
        text = self.prompt(row, method, where)
        n_images = len(row.get("images") or [])
        pieces = text.split(IMAGE_TAG)
        if len(pieces) - 1 != n_images:
            raise ValueError(f"{where}: the question has {len(pieces) - 1} {IMAGE_TAG} tags for {n_images} images")
        content: list[dict[str, Any]] = []
        for i, piece in enumerate(pieces):
            if i:
                content.append({"type": "image"})
            if piece:
                content.append({"type": "text", "text": piece})
        return [{"role": "system", "content": CAPTIONER_SYSTEM}, {"role": "user", "content": content}]

    def parse_solution(self, value: Any, where: str = "solution") -> str:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise TypeError(f"{where}: gold answer must be a string or a number, got {value!r}")
        gold = strip_boxed(str(value))
        if not gold:
            raise ValueError(f"{where}: gold answer is empty")
        return gold

    def parse_answer(self, completion: str, lenient: bool = False) -> str:
        """The caption: the whole completion."""
        return completion.strip()

    def score(self, completion: str, gold: Any, ctx: ScoreContext) -> SampleScore:
        """Not defined: a caption's score depends on the row's question, which ``ScoreContext`` does not carry.
        Use ``score_caption`` or the RACRO pipeline (paddlemix_r1/racro.py)."""
        raise NotImplementedError("captions are scored with their question: use CaptionerTask.score_caption or "
                                  "the racro pipeline (paddlemix_r1/racro.py)")

    def score_caption(self, caption: str, question: str, gold: str) -> SampleScore:
        """One caption scored by the installed reasoner (``rewards.reasoner.set_default_reasoner``)."""
        value = make_reasoner_reward(default_reasoner())([caption], problem=[question], solution=[gold])[0]
        return SampleScore(value, value >= 1.0, caption.strip())
