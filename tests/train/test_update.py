"""The policy update's optimizer steps: how many an iteration takes (what `superhf compare`
matches across methods) and the gradient clipping of `max_grad_norm`."""

from __future__ import annotations

import pytest
import torch

from tests.train.test_options import _completions
from tests.train.test_training_tokens import _trainer


def _norms_at_step(trainer) -> list[float]:
    """The global gradient norm each optimizer step is taken with."""
    norms: list[float] = []

    def step(*args, **kwargs):
        grads = [p.grad for p in trainer.model.parameters() if p.grad is not None]
        norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))

    trainer.optimizer.step = step
    return norms


@pytest.mark.parametrize(("accumulation", "steps"), [(1, 3), (2, 2), (3, 1)])
def test_an_iteration_takes_one_step_per_accumulated_minibatches(
    tmp_path, tokenizer, accumulation, steps
):
    trainer = _trainer(tmp_path, tokenizer, gradient_accumulation_steps=accumulation)
    norms = _norms_at_step(trainer)
    metrics = trainer.fine_tune(_completions(tokenizer, 6), trainer.prompts[:2])
    assert metrics["num_optimizer_steps"] == len(norms) == steps  # 6 rows in minibatches of 2


@pytest.mark.parametrize("max_grad_norm", [None, 0.0, 1e-3])
def test_max_grad_norm_clips_the_gradient_each_step_is_taken_with(
    tmp_path, tokenizer, max_grad_norm
):
    trainer = _trainer(tmp_path, tokenizer, max_grad_norm=max_grad_norm)
    norms = _norms_at_step(trainer)
    metrics = trainer.fine_tune(_completions(tokenizer, 6), trainer.prompts[:2])
    assert metrics["grad_norm"] > 1e-2  # logged before clipping, as transformers logs it
    if max_grad_norm:
        assert max(norms) == pytest.approx(max_grad_norm, rel=1e-3)
    else:  # None and 0: no clipping, the paper's update
        assert min(norms) > 1e-2
