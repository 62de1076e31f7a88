"""Evaluation never touches the training's random streams: Python, NumPy, torch."""

from __future__ import annotations

import random

import numpy as np
import torch

from superhf.config import EvalConfig, SuperHFConfig
from superhf.data import prepare_prompts
from superhf.evaluation.heldout import generate_and_score
from superhf.rewards.scoring import RewardScorer
from superhf.train.trainer import SuperHFTrainer
from tests.conftest import make_tiny_llama

ROWS = [{"prompt": f"Question {i}: tell me about topic {i}."} for i in range(60)]


def noisy_length_reward(prompts, completions, **kw):
    """Length plus noise from Python's and NumPy's global generators (as some rewards do)."""
    return [len(c) / 40 + random.random() + float(np.random.rand()) for c in completions]


def _streams() -> tuple:
    return random.getstate(), np.random.get_state()[1].tolist(), torch.get_rng_state()


def test_generate_and_score_restores_python_numpy_and_torch_streams(tokenizer):
    model = make_tiny_llama(len(tokenizer))
    prompts, _ = prepare_prompts(ROWS[:4], tokenizer, 64)
    config = EvalConfig(max_completion_length=6)
    random.seed(5)
    np.random.seed(5)
    torch.manual_seed(5)
    before = _streams()
    generate_and_score(
        model, tokenizer, prompts, config, RewardScorer([noisy_length_reward]), meteor_pairs=5
    )
    after = _streams()
    assert after[0] == before[0]
    assert after[1] == before[1]
    assert torch.equal(after[2], before[2])


def _train(tmp_path, tokenizer, eval_steps: int) -> tuple[list[dict], dict[str, torch.Tensor]]:
    config = SuperHFConfig(
        num_generations=4,
        max_completion_length=6,
        prompts_per_iteration=4,
        max_iterations=3,
        per_device_train_batch_size=4,
        learning_rate=3e-3,
        warmup_steps=0,
        lr_scheduler_type="constant",
        use_peft=False,
        beta=0.0,
        num_eval_prompts=4,
        eval_steps=eval_steps,
        eval_on_start=False,
        output_dir=str(tmp_path / f"every-{eval_steps}"),
        seed=0,
    )
    trainer = SuperHFTrainer(
        model=make_tiny_llama(len(tokenizer)),
        reward_funcs=noisy_length_reward,
        test_reward_func=noisy_length_reward,  # also scores the kept samples
        args=config,
        processing_class=tokenizer,
        train_dataset=ROWS,
    )
    history = trainer.train()
    weights = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    return history, weights


def test_training_is_the_same_whether_or_not_it_evaluates(tmp_path, tokenizer):
    # eval_steps=1 evaluates after every iteration; 100 only after the last (iteration 3),
    # after that iteration's sampling and fine-tuning. Everything trained must match.
    every, every_weights = _train(tmp_path, tokenizer, 1)
    last, last_weights = _train(tmp_path, tokenizer, 100)
    assert "eval_reward" in every[0] and "eval_reward" not in last[0]
    for key in ("reward", "reward_kept", "loss", "completions/mean_length"):
        assert [m[key] for m in every] == [m[key] for m in last], key
    assert every[-1]["eval_reward"] == last[-1]["eval_reward"]
    for name, value in every_weights.items():
        assert torch.equal(value, last_weights[name]), name
