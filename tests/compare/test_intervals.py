"""Claims worded by their intervals: the paired two-level bootstrap and its words."""

from __future__ import annotations

import numpy as np
import pytest

from superhf.compare.intervals import paired_claim, word


def test_words_follow_the_interval_and_the_margin():
    assert word(0.06, 0.2, 0.05) == "better"
    assert word(-0.2, -0.06, 0.05) == "worse"
    assert word(-0.04, 0.03, 0.05) == "level"
    assert word(-0.044, 0.106, 0.05) == "inconclusive"  # the interval the HH claim had


def _runs(shift: float, noise: float, seeds=5, prompts=100, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.normal(0, 1, prompts)  # the prompts' own difficulty, shared by both methods
    a = {s: list(base + shift + rng.normal(0, noise, prompts)) for s in range(seeds)}
    b = {s: list(base + rng.normal(0, noise, prompts)) for s in range(seeds)}
    return a, b


def test_a_clear_gain_is_better_and_no_difference_is_level():
    a, b = _runs(shift=0.3, noise=0.1)
    claim = paired_claim(a, b, margin=0.05)
    assert claim["word"] == "better" and claim["difference"] == pytest.approx(0.3, abs=0.03)
    assert claim["seeds"] == [0, 1, 2, 3, 4] and claim["num_prompts"] == 100
    a, b = _runs(shift=0.0, noise=0.05)
    assert paired_claim(a, b, margin=0.05)["word"] == "level"
    assert paired_claim(b, _runs(0.3, 0.1)[0], margin=0.05)["word"] == "worse"


def test_pairing_removes_the_prompts_shared_difficulty():
    """Unpaired, the prompts' spread (sd 1) would swamp a 0.1 gain; paired, it cancels."""
    a, b = _runs(shift=0.1, noise=0.02)
    claim = paired_claim(a, b, margin=0.05)
    low, high = claim["interval"]
    assert high - low < 0.05 and claim["word"] == "better"


def test_few_noisy_seeds_are_inconclusive_and_unshared_seeds_are_left_out():
    a, b = _runs(shift=0.05, noise=1.0, seeds=3, prompts=20)
    assert paired_claim(a, b, margin=0.05)["word"] == "inconclusive"
    b = {s + 10: v for s, v in b.items()}
    assert paired_claim(a, b, margin=0.05) is None
