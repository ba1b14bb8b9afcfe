"""RACRO's captioner task: its prompts, conversation and gold form; the recipe parses."""

from __future__ import annotations

import os

import pytest
import yaml

from paddlemix_r1.tasks import get_task
from paddlemix_r1.tasks.captioner import CAPTIONER_SYSTEM

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_conversation_puts_images_at_their_tags():
    task = get_task("captioner")
    row = {"images": ["a.png"], "problem": "What is x?", "question": "<image>What is x?", "solution": "3"}
    conv = task.conversation(row)
    assert conv[0] == {"role": "system", "content": CAPTIONER_SYSTEM}
    assert conv[1]["content"] == [{"type": "text", "text": "Question: "}, {"type": "image"},
                                  {"type": "text", "text": "What is x?\nPlease describe the image. DO NOT try to "
                                                           "answer the question!"}]
    assert CAPTIONER_SYSTEM == ("You are given an image and a relevant question. Based on the query, please describe "
                                "the image in detail. Do not try to answer the question.")
    assert task.parse_solution("\\boxed{60}") == "60" and task.parse_solution(7) == "7"
    assert task.rewards == {"reasoner": 1.0}


def test_recipe_parses_into_grpo_and_reasoner_configs():
    """The recipe is one GRPOConfig; its reasoner_* fields are the reward's ReasonerConfig."""
    from paddlemix_r1.grpo.config import GRPOConfig
    from paddlemix_r1.rewards.reasoner import ReasonerConfig

    with open(os.path.join(ROOT, "configs", "racro_captioner_qwen2_5_vl_3b.yaml")) as f:
        d = yaml.safe_load(f)
    cfg = GRPOConfig.from_dict(d)
    reasoner = cfg.reasoner_config()
    assert reasoner == ReasonerConfig.from_fields(d)
    assert (cfg.num_generations, cfg.learning_rate, cfg.beta, cfg.loss_type) == (4, 1e-6, 0.001, "bnpo")
    assert (cfg.epsilon_low, cfg.epsilon_high, cfg.lr_scheduler_type, cfg.reward_funcs) == (
        0.2, 0.2, "constant", ["reasoner"])
    assert reasoner.model_path.endswith("DeepSeek-R1-Distill-Qwen-7B") and reasoner.num_samples == 1


def test_reasoner_reward_needs_exactly_one_reasoner():
    from paddlemix_r1.grpo.config import GRPOConfig

    with pytest.raises(ValueError, match="exactly one of reasoner_model_path"):
        GRPOConfig(task="captioner", reward_funcs=["reasoner"])
    with pytest.raises(ValueError, match="exactly one of reasoner_model_path"):
        GRPOConfig(task="captioner", reward_funcs=["reasoner"], reasoner_model_path="r", reasoner_url="http://h/v1")
    cfg = GRPOConfig(task="captioner", reward_funcs=["reasoner"], reasoner_url="http://127.0.0.1:8000/v1",
                     reasoner_num_samples=4)
    assert (cfg.reasoner_config().url, cfg.reasoner_config().num_samples) == ("http://127.0.0.1:8000/v1", 4)


def test_training_conversation_is_the_captioners():
    """The trainer's chat for a captioner row is RACRO's: the system turn, the image at its tag."""
    from paddlemix_r1.tasks import row_conversation

    row = {"task": "captioner", "images": ["a.png"], "problem": "How many?", "question": "<image>How many?",
           "solution": "3"}
    chat = row_conversation(row)
    assert chat[0] == {"role": "system", "content": CAPTIONER_SYSTEM}
    assert [part["type"] for part in chat[1]["content"]].count("image") == 1
