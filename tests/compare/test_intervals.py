"""Claims worded by their intervals: the paired two-level bootstrap and its words."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from superhf.compare.intervals import claims, gains_over_start, paired_claim, word


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


def _run(folder: Path, name: str, seed: int, rewards: list[float]) -> dict:
    """A finished run whose evaluation answered each prompt once, train and test reward alike."""
    (folder / name).mkdir()
    rows = [{"prompt_index": i, "reward": r, "test_reward": r} for i, r in enumerate(rewards)]
    (folder / name / "eval.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    return {
        "status": "done",
        "folder": str(folder / name),
        "seed": seed,
        "eval": {"completions_file": "eval.jsonl"},
    }


def test_claims_read_each_runs_answers_and_one_reward_gives_one_claim(tmp_path):
    ours = {"method": "superhf", "variant": None, "beta": 0.35, "label": "superhf b=0.35"}
    grpo = {"method": "grpo", "variant": None, "beta": 0.0, "label": "grpo b=0"}
    rng = np.random.default_rng(0)
    base = rng.normal(0, 1, 32)
    arms = [
        (ours, [_run(tmp_path, f"s{s}", s, list(base + 1)) for s in range(3)]),
        (grpo, [_run(tmp_path, f"g{s}", s, list(base)) for s in range(3)]),
    ]
    both = claims(arms, margin=0.1)
    assert [(c["b"], c["metric"]) for c in both] == [
        ("grpo b=0", "test_reward"),
        ("grpo b=0", "reward"),
    ]
    assert both[0]["word"] == "better" and both[0]["difference"] == pytest.approx(1.0)
    assert both[0]["seeds"] == [0, 1, 2] and both[0]["num_prompts"] == 32
    one = claims(arms, margin=0.1, keys=("test_reward",))  # a reward known exactly
    assert [c["metric"] for c in one] == ["test_reward"]


def test_each_arm_against_the_start_pairs_every_seed_with_the_one_start_policy(tmp_path):
    """n = 1 (nothing to select from) ending where it began is "level"; a clear gain "better"."""
    start_values = list(np.random.default_rng(1).normal(0, 1, 40))
    start = _run(tmp_path, "start", 0, start_values)
    n1 = {"method": "superhf", "variant": "n1", "beta": 0.35, "label": "superhf[n1] b=0.35"}
    ours = {"method": "superhf", "variant": None, "beta": 0.35, "label": "superhf b=0.35"}
    noise = np.random.default_rng(2)
    arms = [
        (
            n1,
            [
                _run(tmp_path, f"n{s}", s, list(start_values + noise.normal(0, 0.01, 40)))
                for s in range(3)
            ],
        ),
        (ours, [_run(tmp_path, f"o{s}", s, [v + 0.5 for v in start_values]) for s in range(2)]),
    ]
    gains = {g["arm"]: g for g in gains_over_start(arms, start, 0.05, ("test_reward",))}
    assert gains["superhf[n1] b=0.35"]["word"] == "level"
    assert gains["superhf[n1] b=0.35"]["seeds"] == [0, 1, 2]
    assert gains["superhf b=0.35"]["word"] == "better"
    assert gains["superhf b=0.35"]["difference"] == pytest.approx(0.5)
    assert gains_over_start(arms, {"status": "running"}, 0.05) == []  # no start answers yet


def test_a_prompt_one_run_left_unanswered_is_left_out_not_shifted(tmp_path):
    """An empty answer is dropped from a run's answers: the pairs stay prompt by prompt."""
    values = list(np.random.default_rng(3).normal(0, 1, 20))
    ours = {"method": "superhf", "variant": None, "beta": 0.35, "label": "superhf b=0.35"}
    other = {"method": "superhf", "variant": None, "beta": 0.0, "label": "superhf b=0"}
    same = _run(tmp_path, "a0", 0, values)
    gap = _run(tmp_path, "b0", 0, values)
    path = Path(gap["folder"]) / "eval.jsonl"  # prompt 5 answered empty: no row
    path.write_text(
        "\n".join(x for x in path.read_text().splitlines() if '"prompt_index": 5,' not in x)
    )
    (claim,) = claims([(ours, [same]), (other, [gap])], 0.05, ("test_reward",))
    assert claim["num_prompts"] == 19 and claim["difference"] == 0.0 and claim["word"] == "level"
