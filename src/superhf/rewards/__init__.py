"""Rewards: what scores a completion.

- `scoring`: reward models (and the one text they read), Python reward functions, their
  weighted sum (`RewardScorer`);
- `default`: the embedded default reward; `harmlessness`: its learned harmlessness head;
- `training`: training a reward model on preference pairs (`superhf reward train`).

The names below load on first use, so the command line's settings parse without torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from superhf.rewards.scoring import (
        RewardFunc,
        RewardModel,
        RewardScorer,
        Scores,
        load_reward_func,
        load_reward_funcs,
        reward_model_text,
    )

__all__ = [
    "RewardFunc",
    "RewardModel",
    "RewardScorer",
    "Scores",
    "load_reward_func",
    "load_reward_funcs",
    "reward_model_text",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("superhf.rewards.scoring"), name)
    raise AttributeError(f"module 'superhf.rewards' has no attribute {name!r}")
