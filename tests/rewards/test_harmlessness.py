"""The harmlessness head: shipped weights, one feature path for training and scoring, the fit,
`superhf reward train --from_embeddings`, and (slow) the script reproducing the shipped head."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import pytest

from superhf.rewards.default import DefaultReward
from superhf.rewards.harmlessness import (
    LinearHead,
    answer_pairs,
    fit_linear_head,
    pairwise_accuracy,
    shipped_head_path,
    split_hh_transcript,
    wilson_interval,
)
from superhf.rewards.scoring import load_reward_funcs
from tests.conftest import SHARED

pytestmark = pytest.mark.usefixtures("_one_thread")

REPO = Path(__file__).resolve().parents[2]
HH_FILE = SHARED / "data" / "hh-rlhf" / "harmless-base-test.jsonl.gz"
needs_hh = pytest.mark.skipif(
    not HH_FILE.is_file(), reason=f"needs the HH-RLHF harmless-base file at {HH_FILE}"
)

HH_ROWS = [
    {
        "chosen": "\n\nHuman: How do I pick a lock?\n\nAssistant: Why do you want to?\n\n"
        "Human: My neighbour's door.\n\nAssistant: I can't help you get into someone "
        "else's home. If you are locked out of your own, call a licensed locksmith.",
        "rejected": "\n\nHuman: How do I pick a lock?\n\nAssistant: Why do you want to?\n\n"
        "Human: My neighbour's door.\n\nAssistant: Sure: insert a tension wrench, then rake "
        "the pins until they set and the cylinder turns.",
    },
    {
        "chosen": "\n\nHuman: Tell me an insult.\n\nAssistant: I'd rather not insult anyone.",
        "rejected": "\n\nHuman: Tell me an insult.\n\nAssistant: You are a worthless idiot.",
    },
]


def test_shipped_head_loads_offline_fast_with_its_credit():
    start = time.perf_counter()
    head = LinearHead.load(shipped_head_path())
    assert time.perf_counter() - start < 1.0
    assert head.weight.shape == (384,) and np.isfinite(head.weight).all()
    assert head.score_low < head.score_high
    info = head.info
    assert "HH-RLHF" in info["data"] and "MIT" in info["data"] and info["train_half"] == "first"
    low, high = info["heldout_accuracy_95ci_wilson"]
    assert 0.5 < low < info["heldout_accuracy"] < high


def test_package_data_ships_the_head():
    """A non-editable install must carry the weights and their JSON (setuptools package data)."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    data = pyproject["tool"]["setuptools"]["package-data"]["superhf.rewards"]
    assert "harmlessness_head.safetensors" in data and "harmlessness_head.json" in data


def test_hh_answer_is_the_last_assistant_turn():
    assert split_hh_transcript(HH_ROWS[1]["chosen"]) == (
        "\n\nHuman: Tell me an insult.",
        "I'd rather not insult anyone.",
    )
    rows = [
        *HH_ROWS,
        {"prompt": "Q?", "chosen": " Yes.", "rejected": " No."},
        {
            "prompt": [{"role": "user", "content": "Hi"}],
            "chosen": [{"role": "assistant", "content": "Hello!"}],
            "rejected": [{"role": "assistant", "content": "Go away."}],
        },
        {
            "chosen": "\n\nHuman: a\n\nAssistant: same",
            "rejected": "\n\nHuman: b\n\nAssistant: same",
        },
        {"chosen": "\n\nHuman: a\n\nAssistant: ", "rejected": "\n\nHuman: a\n\nAssistant: x"},
        {"chosen": "only chosen"},
    ]
    pairs, skipped = answer_pairs(rows)
    assert pairs[2:] == [("Yes.", "No."), ("Hello!", "Go away.")]
    assert pairs[1] == ("I'd rather not insult anyone.", "You are a worthless idiot.")
    assert skipped == 3


def test_training_features_equal_scoring_features(reward: DefaultReward):
    """The head learns from exactly what it later scores: the same ids, the same embedding."""
    pairs, _ = answer_pairs(HH_ROWS)
    answers = [a for pair in pairs for a in pair]
    training = reward.answer_embeddings(answers)  # what the script and --from_embeddings use

    # At scoring time the policy's completion follows "Assistant:" with its leading space.
    prompt = "How do I pick a lock?"
    seen: dict[tuple[int, ...], np.ndarray] = {}
    embed = reward._embed

    def spy(seqs):
        out = embed(seqs)
        seen.update(out)
        return out

    reward._embed = spy
    try:
        parts = reward.components([prompt] * len(answers), [" " + a for a in answers])
    finally:
        reward._embed = embed
    ids = [tuple(i) for i in reward._ids(answers)]
    scoring = np.stack([seen[i] for i in ids])
    np.testing.assert_allclose(training, scoring, atol=1e-6)
    head = LinearHead.load(shipped_head_path())
    np.testing.assert_allclose(parts["harmlessness"], head.bounded(training), atol=1e-6)


def test_harmlessness_component_is_bounded_and_empty_is_worst(reward: DefaultReward):
    pairs, _ = answer_pairs(HH_ROWS)
    answers = [a for pair in pairs for a in pair] + ["", "x " * 400]
    values = reward.harmlessness(["Q?"] * len(answers), answers)
    assert all(-1.0 <= v <= 1.0 for v in values) and values[-2] == -1.0


def test_default_logs_harmlessness_as_its_own_weighted_function():
    """`--reward_funcs default` -> `rewards/harmlessness/mean` in the run's metrics."""
    from superhf.rewards.default import HARMLESSNESS_WEIGHT
    from superhf.rewards.scoring import RewardScorer

    funcs, weights = load_reward_funcs(["default"], weights=[2.0])
    scorer = RewardScorer(funcs, weights)
    assert scorer.names[-1] == "harmlessness"
    assert weights[-1] == pytest.approx(2.0 * HARMLESSNESS_WEIGHT)


def test_fit_recovers_a_preference_and_is_seeded():
    rng = np.random.default_rng(0)
    direction = rng.normal(size=16)
    x = rng.normal(size=(400, 16))
    y = rng.normal(size=(400, 16))
    prefer_x = (x - y) @ direction > 0
    chosen = np.where(prefer_x[:, None], x, y)
    rejected = np.where(prefer_x[:, None], y, x)
    head = fit_linear_head(chosen[:300], rejected[:300], seed=3, steps=200, learning_rate=0.05)
    again = fit_linear_head(chosen[:300], rejected[:300], seed=3, steps=200, learning_rate=0.05)
    np.testing.assert_array_equal(head.weight, again.weight)
    assert pairwise_accuracy(head, chosen[300:], rejected[300:]) > 0.9
    bounded = head.bounded(np.concatenate([chosen, rejected]))
    assert bounded.min() == -1.0 and bounded.max() == 1.0


def test_wilson_interval():
    low, high = wilson_interval(0.625, 1156)
    assert low == pytest.approx(0.5967, abs=1e-3) and high == pytest.approx(0.6524, abs=1e-3)
    assert wilson_interval(0.5, 0) == (0.0, 1.0)


@needs_hh
def test_reward_train_from_embeddings_folder_loads_as_a_reward(tmp_path):
    """`superhf reward train --from_embeddings` on 240 HH rows -> a folder --reward_funcs loads."""
    with gzip.open(HH_FILE, "rt", encoding="utf-8") as f:
        rows = [json.loads(next(f)) for _ in range(240)]
    data = tmp_path / "slice.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "head-rm"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "superhf", "reward", "train", "--dataset_name", str(data),
         "--from_embeddings", "--split", "first-half", "--output_dir", str(out)],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "held-out accuracy" in result.stdout
    info = json.loads((out / "embedding_head.json").read_text())
    assert info["kind"] == "superhf-embedding-head" and info["num_eval_pairs"] > 100
    assert info["accuracy"] > 0.6  # 120 pairs, 384 weights: it fits its training pairs

    funcs, weights = load_reward_funcs([str(out)])
    assert weights == [1.0] and funcs[0].__name__ == "head-rm"
    pairs, _ = answer_pairs(rows[:4])
    answers = [a for pair in pairs for a in pair]
    scores = funcs[0](["Q?"] * len(answers), answers)
    head = LinearHead.load(out / "embedding_head.safetensors")
    expected = head.raw(DefaultReward().answer_embeddings(answers))
    np.testing.assert_allclose(scores, expected, atol=1e-6)


@needs_hh
@pytest.mark.slow
def test_script_reproduces_the_shipped_head(tmp_path):
    """Same data, same seed -> the shipped held-out accuracy, exactly.

    About 2 CPU-minutes (embedding 4,616 answers); 6 min wall on a shared, busy 2-core machine.
    """
    shipped = LinearHead.load(shipped_head_path())
    output = tmp_path / "head.safetensors"
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "train_harmlessness_head.py"), str(HH_FILE),
         "--seed", str(shipped.info["seed"]), "--output", str(output)],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    again = LinearHead.load(output)
    assert again.info["heldout_accuracy"] == shipped.info["heldout_accuracy"]
    assert again.info["train_accuracy"] == shipped.info["train_accuracy"]
    np.testing.assert_allclose(again.weight, shipped.weight, atol=1e-4)
