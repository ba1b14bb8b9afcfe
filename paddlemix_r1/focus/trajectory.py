"""Two-turn focus trajectories: question + image -> box (turn 1) -> crop -> answer with both images (turn 2).

Built on the public ``Processor`` and ``generate``; nothing in generation/ or processing/ knows about it.

    traj = rollout_trajectories(model, proc, questions, images, num_generations=G, seed=0)
    traj.box_turn      # B*G rows, group-major: the box texts and the inputs of their log-prob pass
    traj.boxes         # FocusBox per trajectory (status "ok" or why it is unusable)
    traj.answer_turn   # one row per usable box (traj.answer_rows says whose), None if there is none
    traj.answers       # per trajectory: the answer text, or None (unusable box: reward 0)

Turn 1 runs once per prompt for its G samples (the engine's group prefix sharing). Each usable box
gives its own turn-2 prompt (its own crop), so turn 2 is one batch of distinct prompts, one sample
each. Each turn keeps the exact inputs it was sampled from (``grpo.logprobs.RolloutInputs``), so
``completion_logprobs`` gives the per-token log-probs of either turn under any model.

Layouts of turn 2 (``LAYOUTS``):

``visrl``       VisRL's generator and stage-2 DPO: ONE user turn, [full image, question + "\\n", crop];
                the box text is not in the context.
``multi_turn``  Visual-CoT's conversation: user [full image, question], assistant (box text),
                user [crop]; turn 2 is generated after the box, which is then in the context.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import paddle
from PIL import Image

from paddlemix_r1.focus.boxes import MIN_CROP_SIDE, FocusBox, crop_image, parse_focus_box
from paddlemix_r1.generation import generate
from paddlemix_r1.grpo.logprobs import RolloutInputs
from paddlemix_r1.processing.image_processor import ImageInput, load_image

BOX_INSTRUCTION = ("Please provide the bounding box coordinate of the region that can help you answer the "
                   "question better.")
"""Visual-CoT's box request (its first human turn ends with it)."""
TRAJECTORY_INSTRUCTION = ("Please first provide the bounding box coordinate of the region, then refer to the "
                          "corresponding sub-image to answer the question better.")
"""VisRL's prompt for a whole trajectory (it replaces ``BOX_INSTRUCTION`` in the question)."""
LAYOUTS = ("visrl", "multi_turn")


def trajectory_prompt(question: str) -> str:
    """The first user turn's text: the question, then VisRL's trajectory instruction."""
    return f"{question.strip()} {TRAJECTORY_INSTRUCTION}"


def box_conversation(question: str) -> list[dict[str, Any]]:
    """Turn 1: the full image, then the question with the trajectory instruction."""
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": trajectory_prompt(question)}]}]


def answer_conversation(question: str, box_text: str, layout: str = "visrl") -> list[dict[str, Any]]:
    """Turn 2's prompt (images: [full, crop]) in ``layout`` (module docstring)."""
    if layout == "visrl":
        return [{"role": "user", "content": [{"type": "image"},
                                             {"type": "text", "text": trajectory_prompt(question) + "\n"},
                                             {"type": "image"}]}]
    if layout == "multi_turn":
        return box_conversation(question) + [{"role": "assistant", "content": box_text},
                                             {"role": "user", "content": [{"type": "image"}]}]
    raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")


@dataclass
class Turn:
    """One generated turn of several trajectories: what its log-prob pass needs, and its texts."""

    inputs: RolloutInputs
    completion_mask: paddle.Tensor  # (N, T) 1 up to and including eos
    texts: list[str]

    @property
    def num_tokens(self) -> int:
        return int(self.completion_mask.sum())


@dataclass
class Trajectories:
    """Rollouts of B prompts x G trajectories, group-major (trajectory i*G + j is sample j of prompt i)."""

    group_size: int
    box_turn: Turn
    boxes: list[FocusBox]
    answer_turn: Turn | None
    answer_rows: list[int]
    """The trajectory each row of ``answer_turn`` belongs to (ascending)."""
    answers: list[str | None]
    crops: list[Image.Image | None] = field(repr=False)

    @property
    def generated_tokens(self) -> int:
        """Tokens sampled in both turns (the budget the demo compares methods at)."""
        return self.box_turn.num_tokens + (self.answer_turn.num_tokens if self.answer_turn is not None else 0)


def _turn(out, batch: dict, processor, group_size: int) -> Turn:
    texts = processor.batch_decode(out.completion_ids.numpy().tolist(), skip_special_tokens=True)
    inputs = RolloutInputs(out.prompt_ids, out.completion_ids, out.attention_mask, out.position_ids,
                           batch.get("pixel_values"), batch.get("image_grid_thw"), group_size)
    return Turn(inputs, out.completion_mask, texts)


def _sampling(processor, seed: int, do_sample: bool, temperature: float, top_p: float | None, top_k: int | None
              ) -> dict[str, Any]:
    return dict(do_sample=do_sample, temperature=temperature, top_p=top_p, top_k=top_k,
                eos_token_id=processor.eos_token_id, pad_token_id=processor.pad_token_id, seed=seed)


@paddle.no_grad()
def generate_boxes(model, processor, questions: Sequence[str], images: Sequence[ImageInput], num_generations: int,
                   max_new_tokens: int = 32, seed: int = 0, do_sample: bool = True, temperature: float = 1.0,
                   top_p: float | None = None, top_k: int | None = None, max_prompt_length: int | None = None
                   ) -> Turn:
    """Turn 1 for B prompts, ``num_generations`` samples each (rows group-major)."""
    batch = processor([box_conversation(q) for q in questions], [[im] for im in images],
                      max_length=max_prompt_length)
    out = generate(model, batch, max_new_tokens=max_new_tokens, num_return_sequences=num_generations,
                   **_sampling(processor, seed, do_sample, temperature, top_p, top_k))
    return _turn(out, batch, processor, num_generations)


@paddle.no_grad()
def generate_answers(model, processor, questions: Sequence[str], images: Sequence[ImageInput],
                     box_texts: Sequence[str], crops: Sequence[Image.Image], max_new_tokens: int = 32, seed: int = 0,
                     do_sample: bool = True, temperature: float = 1.0, top_p: float | None = None,
                     top_k: int | None = None, layout: str = "visrl", max_prompt_length: int | None = None) -> Turn:
    """Turn 2 for M trajectories (one row each): question, full image, its box text and its crop."""
    convs = [answer_conversation(q, b, layout) for q, b in zip(questions, box_texts)]
    batch = processor(convs, [[im, crop] for im, crop in zip(images, crops)], max_length=max_prompt_length)
    out = generate(model, batch, max_new_tokens=max_new_tokens, num_return_sequences=1,
                   **_sampling(processor, seed, do_sample, temperature, top_p, top_k))
    return _turn(out, batch, processor, 1)


def rollout_trajectories(model, processor, questions: Sequence[str], images: Sequence[ImageInput],
                         num_generations: int = 1, max_box_tokens: int = 32, max_answer_tokens: int = 32,
                         seed: int = 0, do_sample: bool = True, temperature: float = 1.0, top_p: float | None = None,
                         top_k: int | None = None, layout: str = "visrl", min_crop_side: int = MIN_CROP_SIDE,
                         max_prompt_length: int | None = None) -> Trajectories:
    """B prompts x G two-turn trajectories (module docstring). An unusable box ends its trajectory:
    no turn 2, ``answers[i] is None``; never an exception for anything the model writes."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if len(questions) != len(images):
        raise ValueError(f"{len(questions)} questions but {len(images)} images")
    g = num_generations
    sampling = dict(do_sample=do_sample, temperature=temperature, top_p=top_p, top_k=top_k)
    box_turn = generate_boxes(model, processor, questions, images, g, max_box_tokens, seed,
                              max_prompt_length=max_prompt_length, **sampling)
    originals = [load_image(im) for im in images]  # the processor's loading path, once per prompt
    boxes = [parse_focus_box(t, originals[i // g].size, min_crop_side) for i, t in enumerate(box_turn.texts)]
    crops: list[Image.Image | None] = [crop_image(originals[i // g], b) if b.ok else None for i, b in enumerate(boxes)]
    rows = [i for i, b in enumerate(boxes) if b.ok]
    answers: list[str | None] = [None] * len(boxes)
    answer_turn = None
    if rows:
        answer_turn = generate_answers(model, processor, [questions[i // g] for i in rows],
                                       [originals[i // g] for i in rows], [box_turn.texts[i] for i in rows],
                                       [crops[i] for i in rows], max_answer_tokens, seed + 1, layout=layout,
                                       max_prompt_length=max_prompt_length, **sampling)
        for k, i in enumerate(rows):
            answers[i] = answer_turn.texts[k]
    return Trajectories(g, box_turn, boxes, answer_turn, rows, answers, crops)


# ---- both turns as one log-prob batch (online GRPO) ------------------------------------------------


def _image_spans(grid_thw: np.ndarray | None) -> list[tuple[int, int]]:
    """(start, stop) rows of each image's patches in pixel_values."""
    if grid_thw is None:
        return []
    sizes = np.prod(grid_thw, axis=1).tolist()
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).tolist()
    return [(int(s), int(s + n)) for s, n in zip(starts, sizes)]


def _np(t: paddle.Tensor | None) -> np.ndarray | None:
    return None if t is None else t.numpy()


def merge_turns(traj: Trajectories, pad_token_id: int) -> tuple[RolloutInputs, paddle.Tensor, list[int]]:
    """Both turns of B x G trajectories as ONE log-prob batch of 2 * B * G rows (group size 1), laid out in
    blocks of G: block 2i = turn 1 of prompt i's G trajectories, block 2i + 1 = their turn 2.

    A trajectory without a turn 2 (unusable box) gets a placeholder row there: its turn-1 prompt and one
    padding token with mask 0, so it adds nothing to any loss. Every row carries its own images (the
    crop is in each turn-2 row's PROMPT: the inserted user turn and the crop tokens are never loss
    tokens). Returns (inputs, completion_mask (2BG, T), trajectory index of each row).

    The block layout lets GRPO's per-group advantages work unchanged: give block 2i + 1 the same rewards
    as block 2i and both get the same advantages, so each trajectory's advantage multiplies the tokens of
    both of its turns.
    """
    g = traj.group_size
    b1 = traj.box_turn
    n = len(traj.boxes)
    rows: list[tuple[str, int]] = []  # (turn, row in that turn's batch)
    owner: list[int] = []
    answer_row = {t: k for k, t in enumerate(traj.answer_rows)}
    for p in range(n // g):
        for j in range(g):
            rows.append(("box", p * g + j))
            owner.append(p * g + j)
        for j in range(g):
            i = p * g + j
            rows.append(("answer", answer_row[i]) if i in answer_row else ("placeholder", i))
            owner.append(i)

    turns = {"box": b1, "answer": traj.answer_turn}
    arrays = {}
    for name, turn in turns.items():
        if turn is None:
            continue
        inp = turn.inputs
        arrays[name] = dict(prompt=_np(inp.prompt_ids), comp=_np(inp.completion_ids), attn=_np(inp.attention_mask),
                            pos=_np(inp.position_ids), mask=_np(turn.completion_mask), pv=_np(inp.pixel_values),
                            spans=_image_spans(_np(inp.image_grid_thw)), thw=_np(inp.image_grid_thw),
                            group=inp.group_size)
    length = max(a["prompt"].shape[1] for a in arrays.values())
    t = max(a["comp"].shape[1] for a in arrays.values())
    m = len(rows)
    prompt = np.full((m, length), pad_token_id, np.int64)
    comp = np.full((m, t), pad_token_id, np.int64)
    attn = np.zeros((m, length + t), np.int64)
    pos = np.zeros((3, m, length + t), np.int64)
    mask = np.zeros((m, t), np.int64)
    pixel_rows, thw_rows = [], []
    per_prompt_images = {"box": 1, "answer": 2}
    for r, (kind, k) in enumerate(rows):
        a = arrays["box" if kind == "placeholder" else kind]
        lk, tk = a["prompt"].shape[1], a["comp"].shape[1]
        prompt[r, length - lk:] = a["prompt"][k // a["group"]]  # prompts are kept once per group
        attn[r, length - lk:length] = a["attn"][k, :lk]
        pos[:, r, length - lk:length] = a["pos"][:, k, :lk]
        if kind != "placeholder":
            comp[r, :tk] = a["comp"][k]
            attn[r, length:length + tk] = a["attn"][k, lk:]
            pos[:, r, length:length + tk] = a["pos"][:, k, lk:]
            mask[r, :tk] = a["mask"][k]
        else:
            pos[:, r, length:] = a["pos"][:, k, lk - 1:lk] + 1  # a position after the prompt (masked anyway)
        per = per_prompt_images["box" if kind == "placeholder" else kind]
        first = (k // a["group"]) * per  # the images of this row's prompt in its turn's batch
        for im in range(first, first + per):
            s, e = a["spans"][im]
            pixel_rows.append(a["pv"][s:e])
            thw_rows.append(a["thw"][im])
    inputs = RolloutInputs(paddle.to_tensor(prompt), paddle.to_tensor(comp), paddle.to_tensor(attn),
                           paddle.to_tensor(pos), paddle.to_tensor(np.concatenate(pixel_rows)),
                           paddle.to_tensor(np.stack(thw_rows)), 1)
    return inputs, paddle.to_tensor(mask), owner
