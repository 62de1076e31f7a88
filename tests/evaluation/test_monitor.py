"""The reward-hacking monitor: it fires on divergence and mode collapse, and not on noise."""

from __future__ import annotations

import json

import pytest

from superhf.config import SuperHFConfig
from superhf.evaluation.monitor import RewardHackingMonitor, slope
from superhf.train.trainer import SuperHFTrainer


def _feed(monitor, train, test=None, test_se=0.01, meteor=None):
    """One evaluation per value, each after two training iterations at that train reward."""
    warnings = []
    for i, reward in enumerate(train):
        monitor.update({"reward": reward})
        metrics = {"reward": reward, "eval_meteor": meteor[i] if meteor else 0.1}
        if test is not None:
            metrics |= {"eval_test_reward": test[i], "eval_test_reward_se": test_se}
        warnings.append(monitor.update(metrics))
    return warnings


def test_slope_is_least_squares():
    assert slope([0, 1, 2, 3]) == pytest.approx(1)
    assert slope([3, 1, 3, 1]) == pytest.approx(-0.4)
    assert slope([5, 5, 5]) == 0


def test_train_up_test_down_fires_once_the_window_is_full():
    warnings = _feed(RewardHackingMonitor(window=4), [0, 1, 2, 3, 4], [1.0, 0.8, 0.6, 0.4, 0.2])
    assert warnings[:3] == [None, None, None]
    assert "train reward rose +3.000 while test reward fell -0.600" in warnings[3]
    assert warnings[4] is not None


@pytest.mark.parametrize(
    ("train", "test"),
    [
        ([0, 1, 2, 3], [1.0, 1.1, 1.2, 1.3]),  # both improve: learning, not hacking
        ([3, 2, 1, 0], [1.0, 0.8, 0.6, 0.4]),  # both fall: a bad run, not hacking
        ([0, 1, 2, 3], [1.0, 0.99, 1.0, 0.99]),  # test flat within noise
    ],
)
def test_no_warning_without_divergence(train, test):
    assert _feed(RewardHackingMonitor(window=4), train, test, test_se=0.05) == [None] * 4


def test_a_drop_within_two_standard_errors_is_noise():
    train, test = [0, 1, 2, 3], [1.0, 0.95, 0.9, 0.85]  # fell 0.15
    assert _feed(RewardHackingMonitor(window=4), train, test, test_se=0.1)[-1] is None
    assert _feed(RewardHackingMonitor(window=4), train, test, test_se=0.05)[-1] is not None


def test_meteor_over_the_threshold_fires_without_a_test_reward():
    warnings = _feed(RewardHackingMonitor(meteor_threshold=0.4), [0, 0, 0], meteor=[0.2, 0.41, 0.9])
    assert warnings[0] is None
    assert "METEOR similarity 0.410 > meteor_threshold 0.4" in warnings[1]


def test_iterations_without_evaluation_never_warn():
    monitor = RewardHackingMonitor(window=2)
    assert all(monitor.update({"reward": r}) is None for r in range(10))


def test_stop_on_reward_hacking_saves_and_stops(tmp_path, tiny_model_dir, monkeypatch):
    import superhf.train.trainer

    real = superhf.train.trainer.generate_and_score

    def collapsed(*args, **kwargs):  # the tiny random model's gibberish has METEOR 0: say 0.9
        return real(*args, **kwargs) | {"meteor": 0.9}

    monkeypatch.setattr(superhf.train.trainer, "generate_and_score", collapsed)
    config = SuperHFConfig(
        model_name_or_path=str(tiny_model_dir),
        num_generations=4,
        max_completion_length=8,
        prompts_per_iteration=4,
        num_eval_prompts=6,
        eval_steps=2,
        max_iterations=6,
        top_k=20,
        stop_on_reward_hacking=True,
        output_dir=str(tmp_path / "run"),
        eval_on_start=False,
    )
    rows = [{"prompt": f"Question {i}: what about topic {i}?"} for i in range(64)]
    trainer = SuperHFTrainer(
        reward_funcs=lambda prompts, completions, **kw: [len(c) for c in completions],
        args=config,
        train_dataset=rows,
    )
    history = trainer.train()
    assert len(history) == 2 and trainer.stop_reason.startswith("the reward-hacking monitor")
    assert history[0]["reward_hacking"] is None
    assert "METEOR similarity 0.900 > meteor_threshold 0.4" in history[1]["reward_hacking"]
    assert (tmp_path / "run" / "checkpoints" / "checkpoint-2").is_dir()
    logged = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert logged[1]["reward_hacking"] == history[1]["reward_hacking"]
