"""A simple reward of our own for quick ablations (issue 17): answers of a target length.

    superhf train --reward_funcs bench.length_reward:target_length ...

(run from the repository root, so that `bench` imports). The reward is minus the distance, in
words, between the completion and `TARGET_WORDS`: 0 is best, and every word too many or too
few costs 1. It needs no model, so a run measures the trainer, not the reward model, and a
policy can only raise it by learning to stop (or to keep going) at the right place.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

TARGET_WORDS = 10
"""The length, in whitespace-separated words, that scores 0."""


def target_length(prompts: Sequence[Any], completions: Sequence[str], **_: Any) -> list[float]:
    """-|words - TARGET_WORDS| of each completion (its prompt is not read)."""
    return [-float(abs(len(c.split()) - TARGET_WORDS)) for c in completions]
