"""Step-level DPO training on VisRL records: reading, stage 1 / stage 2 losses, LoRA reference, checkpoints."""

from __future__ import annotations

import json
import math
import os

import paddle
import pytest
from PIL import Image

from paddlemix_r1.grpo import dpo_train
from paddlemix_r1.grpo.dpo_train import DPOTrainConfig, DPOTrainer, pair_loss, read_pairs


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from paddlemix_r1.models import build_tiny_checkpoint

    path = str(tmp_path_factory.mktemp("dpo") / "tiny")
    return build_tiny_checkpoint(path, family="qwen2_vl", seed=0, max_pixels=56 * 56)


@pytest.fixture
def records(tmp_path):
    Image.new("RGB", (300, 200), (250, 250, 250)).save(tmp_path / "a.png")
    recs = [{"images": ["a.png"],
             "conversations": [{"from": "human", "value": "<image>\nWhat is it? Please first provide the bounding box "
                                "coordinate of the region, then refer to the corresponding sub-image to answer the "
                                "question better."}],
             "chosen_step": {"from": "gpt", "value": "[0.100, 0.200, 0.500, 0.600]"},
             "rejected_step": {"from": "gpt", "value": "[0.600, 0.600, 0.900, 0.950]"},
             "chosen": {"from": "gpt", "value": "a cat"}, "rejected": {"from": "gpt", "value": "a dog"}}] * 3
    path = tmp_path / "pairs.json"
    path.write_text(json.dumps(recs))
    return str(path), str(tmp_path), recs


def test_read_pairs(records) -> None:
    path, root, recs = records
    pairs = read_pairs([path], root)
    assert len(pairs) == 3 and pairs[0]["question"] == "What is it?"
    assert pairs[0]["crop"].size == (120, 80)  # the CHOSEN box's crop: 0.1..0.5 of 300, 0.2..0.6 of 200
    bad = [dict(recs[0]), {k: v for k, v in recs[0].items() if k != "rejected"}]
    bad[0]["chosen_step"] = {"from": "gpt", "value": "[0.5, 0.5, 0.2, 0.9]"}
    with open(path, "w") as f:
        json.dump(bad[1:], f)
    with pytest.raises(ValueError, match=r"pairs.json:0: missing field\(s\) \['rejected'\]"):
        read_pairs([path], root)
    with open(path, "w") as f:
        json.dump(bad[:1], f)
    with pytest.raises(ValueError, match=r"pairs.json:0: field 'chosen_step'.*\(empty\)"):
        read_pairs([path], root)


def test_an_empty_rejected_answer_is_a_pair(tiny, records) -> None:
    """``visrl-generate`` writes a turn 2 that ended at once (empty answer, score 0) as the rejected answer: the
    reader takes it (its completion is eos alone) and stage 2 trains on it; an empty chosen answer is refused."""
    path, root, recs = records
    with open(path, "w") as f:
        json.dump([{**recs[0], "rejected": {"from": "gpt", "value": ""}}], f)
    pairs = read_pairs([path], root)
    assert pairs[0]["rejected"] == "" and pairs[0]["chosen"] == "a cat"
    cfg = DPOTrainConfig(model_name_or_path=tiny, data_files=[path], image_root=root, stage=2, max_steps=1,
                         per_device_batch_size=1, gradient_accumulation_steps=1, save_steps=0,
                         output_dir=os.path.join(root, "out"))
    trainer = DPOTrainer(cfg, pairs=pairs)
    loss, metrics = pair_loss(trainer.model, None, trainer.processor, pairs, cfg)
    assert math.isclose(float(loss), math.log(2), rel_tol=1e-5) and math.isfinite(metrics["answer/logps/rejected"])
    with open(path, "w") as f:
        json.dump([{**recs[0], "chosen": {"from": "gpt", "value": " "}}], f)
    with pytest.raises(ValueError, match=r"pairs.json:0: field 'chosen' must be .*non-empty text"):
        read_pairs([path], root)


@pytest.mark.parametrize("stage", [1, 2])
def test_losses_start_at_log2_with_the_adapters_as_the_only_difference(tiny, records, stage, monkeypatch) -> None:
    path, root, _ = records
    cfg = DPOTrainConfig(model_name_or_path=tiny, data_files=[path], image_root=root, stage=stage, max_steps=3,
                         per_device_batch_size=2, gradient_accumulation_steps=1, learning_rate=5e-3, save_steps=0,
                         output_dir=os.path.join(root, f"out{stage}"))
    trainer = DPOTrainer(cfg)
    seen = []
    real = dpo_train.build_sft_inputs

    def spy(model, processor, prompts, images, answers):
        seen.append((prompts, images, answers))
        return real(model, processor, prompts, images, answers)

    monkeypatch.setattr(dpo_train, "build_sft_inputs", spy)
    loss, metrics = pair_loss(trainer.model, None, trainer.processor, trainer.pairs[:2], cfg)
    # LoRA's B starts at zero: policy == reference, so every sigmoid term is log 2.
    assert float(loss) == pytest.approx(math.log(2), abs=1e-5)
    assert len(seen) == stage
    if stage == 2:
        prompts, images, answers = seen[1]
        assert answers == ["a cat", "a cat", "a dog", "a dog"]
        crops = [trainer.pairs[i % 2]["crop"] for i in range(4)]  # [chosen x 2 pairs, rejected x 2 pairs]
        assert all(len(im) == 2 and im[1] is c for im, c in zip(images, crops))  # both under the chosen crop
        assert metrics["box/loss"] == pytest.approx(math.log(2), abs=1e-5)
    monkeypatch.setattr(dpo_train, "build_sft_inputs", real)
    history = trainer.train()
    assert len(history) == 3 and history[-1]["box/rewards/margins"] > 0.0  # the chosen box gains on the rejected
    assert [h["lr"] for h in history] == pytest.approx([5e-3, 5e-3, 2.5e-3])  # 1 warmup step, then cosine
    ckpt = os.path.join(cfg.output_dir, "checkpoint-3")
    assert os.path.isfile(os.path.join(ckpt, "model", "config.json"))
    assert os.path.isfile(os.path.join(ckpt, "adapter", "adapter_config.json"))


@pytest.mark.parametrize("stage", [1, 2])
def test_sft_weight_adds_the_chosen_token_nll_of_each_step(tiny, records, stage) -> None:
    """TRL's ``sft`` loss type with weight w: at the start (policy == reference) each step's loss is
    log 2 + w x (-sum of the chosen texts' log-probs / their token count), and stage 2 weights the steps."""
    path, root, _ = records
    cfg = DPOTrainConfig(model_name_or_path=tiny, data_files=[path], image_root=root, stage=stage, sft_weight=0.7,
                         save_steps=0, output_dir=os.path.join(root, f"sft{stage}"))
    trainer = DPOTrainer(cfg)
    pairs = trainer.pairs[:2]
    loss, _ = pair_loss(trainer.model, None, trainer.processor, pairs, cfg)
    with paddle.no_grad():
        def nll(prompts, images, chosen, rejected):
            pc, _, _, _, lc, _ = dpo_train.step_logps(trainer.model, None, trainer.processor, prompts, images,
                                                      chosen, rejected)
            return -float(pc.sum()) / float(lc.sum())

        box = nll([dpo_train.box_conversation(p["question"]) for p in pairs], [[p["full"]] for p in pairs],
                  [p["chosen_step"] for p in pairs], [p["rejected_step"] for p in pairs])
        expected = math.log(2) + 0.7 * box
        if stage == 2:
            answer = nll([dpo_train.answer_conversation(p["question"], p["chosen_step"], cfg.layout) for p in pairs],
                         [[p["full"], p["crop"]] for p in pairs], [p["chosen"] for p in pairs],
                         [p["rejected"] for p in pairs])
            expected = 0.5 * expected + 0.5 * (math.log(2) + 0.7 * answer)
    assert box > 0.1 and float(loss) == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="sft_weight must be >= 0"):
        DPOTrainConfig(sft_weight=-1.0)


def test_full_finetuning_uses_a_frozen_reference(tiny, records) -> None:
    path, root, _ = records
    cfg = DPOTrainConfig(model_name_or_path=tiny, data_files=[path], image_root=root, use_peft=False, max_steps=1,
                         per_device_batch_size=1, gradient_accumulation_steps=2, save_steps=0,
                         output_dir=os.path.join(root, "full"))
    trainer = DPOTrainer(cfg)
    assert trainer.reference is not None and all(p.stop_gradient for p in trainer.reference.parameters())
    assert all(p.stop_gradient for p in trainer.model.visual.parameters())  # freeze_vision
    trainer.train(save=False)
    assert trainer.step == 1


def test_config_validation_and_overrides(tmp_path) -> None:
    with pytest.raises(ValueError, match="stage must be 1"):
        DPOTrainConfig(stage=3)
    p = tmp_path / "c.yaml"
    p.write_text("learning_rate: 5e-6\nstage: 2\n")
    cfg = DPOTrainConfig.load(str(p), ["beta=0.2", "data_files=[a.json]"])
    assert (cfg.learning_rate, cfg.stage, cfg.beta, cfg.data_files) == (5e-6, 2, 0.2, ["a.json"])
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['lr'\]"):
        DPOTrainConfig.load(str(p), ["lr=1"])
