"""Filter: which samples of an iteration the loss trains on, and with what weight.

The paper keeps the best `k` completions of each prompt (`top_k_per_prompt`), never comparing
across prompts. The options (`select_training_samples`, measured in docs/RESULTS.md) stay
per prompt too: weights from a sample's reward relative to its prompt's samples instead of a
hard cut, the worst sample of each prompt as a negative, and prompts whose samples all score
the same skipped ("no signal, no step").
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

UNIFORM_TOLERANCE = 1e-6
"""Scores this close count as equal (a uniform prompt; a negative must be worse than this)."""
ADVANTAGE_EPS = 1e-4
"""Added to a prompt's reward standard deviation in the advantage (TRL's GRPO uses 1e-4)."""


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
    kept: list[int] = []
    for members in _by_prompt(prompt_indices).values():
        kept.extend(sorted(members, key=lambda i: (-scores[i], i))[:k])
    return kept


def _by_prompt(prompt_indices: Sequence[int]) -> dict[int, list[int]]:
    """Sample indices of each prompt, prompts in order of first appearance."""
    by_prompt: dict[int, list[int]] = defaultdict(list)
    for i, p in enumerate(prompt_indices):
        by_prompt[p].append(i)
    return by_prompt


def relative_weights(scores: Sequence[float], kind: str) -> list[float]:
    """Each sample's reward relative to its prompt's samples (`scores` are one prompt's).

    - "advantage": (r - mean) / (std + 1e-4), std the sample standard deviation (as TRL's
      GRPO computes its group advantage; Shao et al. 2024); 0 for a single sample.
    - "rank": the centred rank, 1 for the best, -1 for the worst, linear in between
      (1 - 2 * rank / (n - 1), tied scores sharing their mean rank; Salimans et al. 2017's
      rank transform): the advantage's order without its scale.

    Example:
        >>> relative_weights([3.0, 1.0, 2.0], "rank")
        [1.0, -1.0, 0.0]
    """
    n = len(scores)
    if n < 2:
        return [0.0] * n
    if kind == "advantage":
        mean, std = statistics.fmean(scores), statistics.stdev(scores)
        return [(r - mean) / (std + ADVANTAGE_EPS) for r in scores]
    if kind == "rank":
        # rank 0 = best; tied scores share the mean of their ranks
        order = sorted(range(n), key=lambda i: -scores[i])
        ranks = [0.0] * n
        start = 0
        while start < n:
            end = start
            while end + 1 < n and scores[order[end + 1]] == scores[order[start]]:
                end += 1
            for j in range(start, end + 1):
                ranks[order[j]] = (start + end) / 2
            start = end + 1
        return [1 - 2 * r / (n - 1) for r in ranks]
    raise ValueError(f"unknown sample weighting {kind!r}: use none, advantage or rank.")


@dataclass
class Selection:
    """What the loss trains on in one iteration."""

    indices: list[int]
    """Samples trained on, prompt by prompt: each prompt's kept samples, then its negative."""
    weights: list[float] | None
    """One per index: > 0 a cross-entropy weight, < 0 minus an unlikelihood weight; None: every
    sample is a plain (token-weighted) cross-entropy target, as in the paper."""
    kept: list[int]
    """The samples trained toward (positive weight), as `top_k_per_prompt` gives them."""
    num_skipped_prompts: int
    """Prompts not trained on because all their samples scored the same."""
    num_negatives: int
    """Samples pushed down (negative weight)."""


def select_training_samples(
    scores: Sequence[float],
    prompt_indices: Sequence[int],
    num_kept_per_prompt: int,
    sample_weighting: str = "none",
    negative_weight: float = 0.0,
    skip_uniform_prompts: bool = False,
) -> Selection:
    """The paper's top-K filter, with its options (`SuperHFConfig`'s fields).

    1. `skip_uniform_prompts`: a prompt whose samples all score within 1e-6 of each other
       gives no signal and is dropped whole.
    2. The best `num_kept_per_prompt` samples of each prompt are the candidates (the paper).
    3. `sample_weighting` "advantage" or "rank" (`relative_weights`, computed over all of the
       prompt's samples) weights each candidate; candidates whose weight is <= 0 are dropped,
       so only better-than-average samples are trained toward. The positive weights are then
       divided by their mean over the iteration: the mean weight is 1 and the update's scale
       stays that of plain cross-entropy. "none": every candidate weighs 1.
    4. `negative_weight` > 0: the worst sample of each prompt (the earliest on ties), unless it
       is already trained toward or scores within 1e-6 of the prompt's best, is trained away
       from with weight -negative_weight (an unlikelihood term, `superhf.train.loss`).

    With every option off this is `top_k_per_prompt` and `weights` is None.

    Args:
        scores: one total reward per sample.
        prompt_indices: the prompt each sample answers.
        num_kept_per_prompt: the paper's K.
        sample_weighting: "none", "advantage" or "rank".
        negative_weight: the unlikelihood weight of each prompt's worst sample (0 = none).
        skip_uniform_prompts: drop prompts whose samples all score the same.

    Returns:
        A `Selection`: the indices to train on, their weights (None: plain CE), the kept
        samples, and the counts to log.

    Example:
        >>> s = select_training_samples([1.0, 3.0, 2.0, 5.0, 5.0], [0, 0, 0, 1, 1], 2, "rank")
        >>> s.indices, s.weights, s.num_skipped_prompts
        ([1], [1.0], 0)
    """
    if len(scores) != len(prompt_indices):
        raise ValueError(f"{len(scores)} scores for {len(prompt_indices)} samples.")
    indices: list[int] = []
    raw: list[float] = []
    kept: list[int] = []
    skipped = num_negatives = 0
    for members in _by_prompt(prompt_indices).values():
        own = [scores[i] for i in members]
        best = max(own)
        if skip_uniform_prompts and best - min(own) <= UNIFORM_TOLERANCE:
            skipped += 1
            continue
        candidates = top_k_per_prompt(own, [0] * len(own), num_kept_per_prompt)
        relative = (
            relative_weights(own, sample_weighting)
            if sample_weighting != "none"
            else [1.0] * len(own)
        )
        positives = [j for j in candidates if relative[j] > 0]
        kept += [members[j] for j in positives]
        indices += [members[j] for j in positives]
        raw += [relative[j] for j in positives]
        if negative_weight > 0:
            worst = min(range(len(own)), key=lambda j: (own[j], j))
            if worst not in positives and own[worst] < best - UNIFORM_TOLERANCE:
                indices.append(members[worst])
                raw.append(-negative_weight)
                num_negatives += 1
    if sample_weighting == "none" and negative_weight == 0:
        return Selection(indices, None, kept, skipped, num_negatives)
    mean_positive = statistics.fmean([w for w in raw if w > 0] or [1.0])
    weights = [w / mean_positive if w > 0 else w for w in raw]
    return Selection(indices, weights, kept, skipped, num_negatives)
