"""Fixtures of the default-reward tests: one thread, and one reward loaded once per module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from superhf.rewards.default import DefaultReward


@pytest.fixture(scope="module")
def _one_thread() -> Iterator[None]:
    """MiniLM on many tiny batches is much faster on one thread when the CPU is shared (modules
    that want it say `pytestmark = pytest.mark.usefixtures("_one_thread")`)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def reward() -> DefaultReward:
    """One reward (models loaded once) for the module; batch_size=16 forces several batches."""
    return DefaultReward(batch_size=16)
