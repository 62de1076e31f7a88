"""Rewards: what scores a completion.

- `scoring`: reward models, Python reward functions, their weighted sum (`RewardScorer`);
- `default`: the embedded default reward (relevance, toxicity, repetition, unfinished);
- `training`: training a reward model on preference pairs (`superhf reward train`).
"""

from superhf.rewards.scoring import (
    RewardError,
    RewardFunc,
    RewardModel,
    RewardScorer,
    Scores,
    load_reward_func,
    load_reward_funcs,
)

__all__ = [
    "RewardError",
    "RewardFunc",
    "RewardModel",
    "RewardScorer",
    "Scores",
    "load_reward_func",
    "load_reward_funcs",
]
