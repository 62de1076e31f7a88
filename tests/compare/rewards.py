"""Cheap reward functions the harness tests load by name (`tests.compare.rewards:length`)."""

from __future__ import annotations


def length(prompts, completions, **kw):
    """Train reward: longer answers score higher."""
    return [len(c) / 20 for c in completions]


def vowels(prompts, completions, **kw):
    """Test reward: a different taste (the share of vowels)."""
    return [sum(ch in "aeiou" for ch in c) / max(len(c), 1) for c in completions]
