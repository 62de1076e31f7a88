"""The learning-rate schedule stepped once per iteration, with its warm-up shifted one earlier."""

from __future__ import annotations

import io

import pytest
import torch
from transformers import get_scheduler

from superhf.train.schedule import iteration_scheduler


def _rates(scheduler: torch.optim.lr_scheduler.LRScheduler, steps: int) -> list[float]:
    optimizer = scheduler.optimizer
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def _optimizer() -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)


@pytest.mark.parametrize("name", ["linear", "cosine", "constant_with_warmup"])
def test_warmup_starts_one_iteration_earlier_then_follows_transformers(name):
    shifted = _rates(iteration_scheduler(name, _optimizer(), 4, 10), 10)
    plain = _rates(get_scheduler(name, _optimizer(), 4, 10), 10)
    assert shifted[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])  # iteration 1 already trains
    assert plain[0] == 0.0
    assert shifted[4:] == pytest.approx(plain[4:])  # after the warm-up: transformers' own


def test_without_warmup_it_is_transformers_schedule():
    assert _rates(iteration_scheduler("linear", _optimizer(), 0, 5), 5) == pytest.approx(
        _rates(get_scheduler("linear", _optimizer(), 0, 5), 5)
    )


def test_its_state_loads_with_weights_only():
    """Checkpoints load the scheduler with weights_only=True: its state holds no code. (The
    rate itself lives in the optimizer's state, which checkpoints hold beside it.)"""
    scheduler = iteration_scheduler("cosine", _optimizer(), 2, 6)
    _rates(scheduler, 3)
    buffer = io.BytesIO()
    torch.save((scheduler.optimizer.state_dict(), scheduler.state_dict()), buffer)
    buffer.seek(0)
    optimizer_state, scheduler_state = torch.load(buffer, weights_only=True)
    resumed = iteration_scheduler("cosine", _optimizer(), 2, 6)
    resumed.optimizer.load_state_dict(optimizer_state)
    resumed.load_state_dict(scheduler_state)
    assert _rates(resumed, 3) == pytest.approx(_rates(scheduler, 3))
