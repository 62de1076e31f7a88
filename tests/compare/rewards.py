"""Cheap reward functions for the compare tests, importable by name (`tests.compare.rewards:...`):
a `MethodRun` names its rewards as strings, and the PPO baseline loads them in another process."""

from __future__ import annotations

from typing import Any

RECORDERS: dict[str, Any] = {}
"""The reward `recording_reward` forwards to, set by a test."""


def length_reward(prompts: list[Any], completions: list[str], **kw: Any) -> list[float]:
    return [len(c) / 40 for c in completions]


def recording_reward(prompts: list[Any], completions: list[str], **kw: Any) -> list[float]:
    return RECORDERS["current"](prompts, completions, **kw)


def logging_reward(prompts: list[Any], completions: list[str], **kw: Any) -> list[float]:
    """`length_reward`, appending what it receives to $SUPERHF_TEST_REWARD_LOG (JSON lines):
    a reward called in another process (the PPO baseline's) reports its inputs this way."""
    import json
    import os

    with open(os.environ["SUPERHF_TEST_REWARD_LOG"], "a", encoding="utf-8") as f:
        for prompt, completion in zip(prompts, completions, strict=True):
            f.write(json.dumps({"prompt": prompt, "completion": completion}) + "\n")
    return length_reward(prompts, completions)


def length(prompts, completions, **kw):
    """Train reward: longer answers score higher."""
    return [len(c) / 20 for c in completions]


def vowels(prompts, completions, **kw):
    """Test reward: a different taste (the share of vowels)."""
    return [sum(ch in "aeiou" for ch in c) / max(len(c), 1) for c in completions]
