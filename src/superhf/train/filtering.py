"""Filter: keep the best `k` completions of each prompt, never comparing across prompts."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence


def top_k_per_prompt(scores: Sequence[float], prompt_indices: Sequence[int], k: int) -> list[int]:
    """Indices of the kept samples, grouped by prompt in order of first appearance.

    Within a prompt, higher scores win; ties go to the earlier sample, so the result depends
    only on the scores and their order.

    Args:
        scores: one total reward per sample.
        prompt_indices: the prompt each sample answers.
        k: how many to keep per prompt (the paper's K; fewer when a prompt has fewer samples).

    Returns:
        Indices into `scores` of the kept samples.

    Example:
        >>> top_k_per_prompt([0.1, 0.9, 0.5, 0.2], [0, 0, 1, 1], k=1)
        [1, 2]
    """
    if len(scores) != len(prompt_indices):
        raise ValueError(f"{len(scores)} scores for {len(prompt_indices)} samples.")
    by_prompt: dict[int, list[int]] = defaultdict(list)
    for i, p in enumerate(prompt_indices):
        by_prompt[p].append(i)
    kept: list[int] = []
    for members in by_prompt.values():
        kept.extend(sorted(members, key=lambda i: (-scores[i], i))[:k])
    return kept
