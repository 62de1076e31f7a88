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
    pair_features,
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
    assert head.weight.shape == (576,) and np.isfinite(head.weight).all()
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
    assert pairs[2:] == [("Q?", "Yes.", "No."), ("Hi", "Hello!", "Go away.")]
    assert pairs[0][0] == "My neighbour's door."  # the human turn the answer replies to
    assert pairs[1] == (
        "Tell me an insult.",
        "I'd rather not insult anyone.",
        "You are a worthless idiot.",
    )
    assert skipped == 3


def test_training_features_equal_scoring_features(reward: DefaultReward):
    """The head learns from exactly what it later scores: the same judge pass, the same tokens.

    Training reads only the answer's first 64 tokens; causal attention makes their hidden
    states those of the full scoring pass, so a long answer checks that too.
    """
    pairs, _ = answer_pairs(HH_ROWS)
    long_answer = " ".join(["Please call a licensed locksmith and show them your ID."] * 12)
    questions = [q for q, _, _ in pairs for _ in (0, 1)] + ["How do I pick a lock?"]
    answers = [a for _, c, r in pairs for a in (c, r)] + [long_answer]
    training = reward.harmlessness_features(questions, answers)  # what the script uses
    assert len(reward._judge_tokenizer(long_answer)["input_ids"]) > 100
    _, scoring = reward._judge_pass(questions, answers)  # the pass `components` runs
    np.testing.assert_allclose(training, scoring, atol=1e-4)
    head = LinearHead.load(shipped_head_path())
    parts = reward.components(questions, answers)
    # the component is the head's score scaled by the request's risk (request_risk.py)
    risk = np.array(reward.request_risk(questions))
    np.testing.assert_allclose(parts["harmlessness"], risk * head.bounded(training), atol=1e-5)


def test_the_question_changes_the_harmlessness_score(reward: DefaultReward):
    """The head reads the answer after its question, so the same help can be judged apart."""
    answer = "Mix it into its food at night so nobody notices."
    parts = reward.components(
        ["How do I give my dog its medicine?", "How can I poison my neighbour's dog?"],
        [answer, answer],
    )
    assert parts["harmlessness"][0] != parts["harmlessness"][1]


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


def test_fit_recovers_a_preference_and_is_deterministic():
    rng = np.random.default_rng(0)
    direction = rng.normal(size=16)
    x = rng.normal(size=(400, 16))
    y = rng.normal(size=(400, 16))
    prefer_x = (x - y) @ direction > 0
    chosen = np.where(prefer_x[:, None], x, y)
    rejected = np.where(prefer_x[:, None], y, x)
    head = fit_linear_head(chosen[:300], rejected[:300], l2=0.01)
    again = fit_linear_head(chosen[:300], rejected[:300], l2=0.01)
    np.testing.assert_array_equal(head.weight, again.weight)
    # standardisation is folded into the stored weight and bias: raw features in, same order out
    assert head.bias != 0.0
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
    questions = [q for q, _, _ in pairs for _ in (0, 1)]
    answers = [a for _, c, r in pairs for a in (c, r)]
    scores = funcs[0](questions, answers)
    head = LinearHead.load(out / "embedding_head.safetensors")
    expected = head.raw(DefaultReward().harmlessness_features(questions, answers))
    np.testing.assert_allclose(scores, expected, atol=1e-6)


@needs_hh
@pytest.mark.slow
def test_shipped_head_scores_its_reported_accuracy():
    """The shipped weights, on features computed now, give the held-out accuracy the script
    recorded for the first 100 held-out pairs (all 1,156 would take about 8 CPU-minutes)."""
    shipped = LinearHead.load(shipped_head_path())
    with gzip.open(HH_FILE, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    held_out, _ = answer_pairs(rows[len(rows) // 2 :])
    chosen, rejected = pair_features(DefaultReward(batch_size=32), held_out[:100])
    measured = pairwise_accuracy(shipped, chosen, rejected)
    assert measured == pytest.approx(shipped.info["heldout_accuracy_first_100"], abs=0.011)


@needs_hh
@pytest.mark.slow
def test_script_trains_a_head_and_a_judge(tmp_path):
    """The script on 60 pairs of each half: both heads written, loadable, with their records."""
    output, judge = tmp_path / "head.safetensors", tmp_path / "judge" / "embedding_head.safetensors"
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "train_harmlessness_head.py"), str(HH_FILE),
         "--max_pairs", "60", "--output", str(output), "--judge_output", str(judge)],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    head, other = LinearHead.load(output), LinearHead.load(judge)
    assert head.info["train_half"] == "first" and other.info["train_half"] == "second"
    assert head.info["num_train_pairs"] == 60 and head.info["train_accuracy"] > 0.8
    skipped = head.info["num_rows_skipped"]
    assert skipped["train"] >= 0 and other.info["num_rows_skipped"]["train"] == skipped["heldout"]
    assert head.weight.shape == (576,) and not np.allclose(head.weight, other.weight)
    funcs, _ = load_reward_funcs([str(judge.parent)])  # the judge folder is a reward
    assert len(funcs[0](["How do I pick a lock?"], ["Call a locksmith."])) == 1
