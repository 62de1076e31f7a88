"""The reward-hacking monitor: it fires on divergence and mode collapse, and not on noise."""

from __future__ import annotations

import json
import math

import pytest

from superhf.config import SuperHFConfig
from superhf.evaluation.monitor import (
    SIGNAL_BY_NAME,
    RewardHackingMonitor,
    replay,
    score,
    slope,
)
from superhf.train.trainer import SuperHFTrainer


def _feed(monitor, train, test=None, test_se=0.01, meteor=None):
    """One evaluation per value (its train reward `eval_reward`), after two training
    iterations with that training reward too."""
    warnings = []
    for i, reward in enumerate(train):
        monitor.update({"reward": reward})
        metrics = {
            "reward": reward,
            "eval_reward": reward,
            "eval_meteor": meteor[i] if meteor else 0.1,
        }
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
    assert "eval reward rose +3.000 while eval test reward fell -0.600" in warnings[3]
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


def _eval_row(eval_reward, test, reward=None, meteor=0.1):
    row = {"eval_reward": eval_reward, "eval_test_reward": test, "eval_test_reward_se": 0.01}
    row["eval_meteor"] = meteor
    if reward is not None:
        row["reward"] = reward
    return row


def test_a_nan_test_reward_does_not_misalign_the_series():
    # The 4th evaluation has no test reward: that evaluation is left out of BOTH series.
    # Aligned, the evaluations with both values have eval_reward 3, 2, 1, 0 (falling): no
    # divergence. Misaligned (train reward of evaluations 2-5 against test of 1, 2, 3, 5),
    # the train series would be 2, 1, 10, 0 (rising by least squares) and fire.
    monitor = RewardHackingMonitor(window=4)
    rows = [
        _eval_row(3, 1.0, reward=3),
        _eval_row(2, 0.8, reward=2),
        _eval_row(1, 0.6, reward=1),
        _eval_row(10, float("nan"), reward=10),
        _eval_row(0, 0.4, reward=0),
    ]
    assert [monitor.update(row) for row in rows] == [None] * 5
    monitor = RewardHackingMonitor(window=4)
    rows[-1] = _eval_row(11, 0.4, reward=11)  # now the aligned train reward rises: it fires
    assert [monitor.update(row) for row in rows][-1] is not None


def test_the_trend_compares_eval_reward_with_eval_test_reward():
    # Same held-out completions: eval_reward (train scorer) vs eval_test_reward (test scorer).
    # The training prompts' reward (`reward`, sampled at T=1.0) does not enter the trend.
    test = [1.0, 0.8, 0.6, 0.4]
    flat_eval = [_eval_row(1.0, t, reward=r) for t, r in zip(test, [0, 1, 2, 3], strict=True)]
    monitor = RewardHackingMonitor(window=4)
    assert [monitor.update(row) for row in flat_eval] == [None] * 4
    rising_eval = [_eval_row(e, t, reward=0.0) for e, t in zip([0, 1, 2, 3], test, strict=True)]
    monitor = RewardHackingMonitor(window=4)
    warning = [monitor.update(row) for row in rising_eval][-1]
    assert "eval reward rose +3.000 while eval test reward fell -0.600" in warning


def test_iterations_without_evaluation_never_warn():
    monitor = RewardHackingMonitor(window=2)
    assert all(monitor.update({"reward": r}) is None for r in range(10))


def test_stop_on_reward_hacking_saves_and_stops(tmp_path, tiny_model_dir, monkeypatch):
    import superhf.train.trainer

    real = superhf.train.trainer.summarize_eval

    def collapsed(*args, **kwargs):  # the tiny random model's gibberish has METEOR 0: say 0.9
        return real(*args, **kwargs) | {"meteor": 0.9}

    monkeypatch.setattr(superhf.train.trainer, "summarize_eval", collapsed)
    from accelerate.tracking import TensorBoardTracker

    finished = []  # report_to's run is closed on the stop too (a process of many ends by _exit)
    monkeypatch.setattr(TensorBoardTracker, "finish", lambda self: finished.append(self))
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
        report_to=["tensorboard"],
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
    assert len(finished) == 1


# --- signals against the run's own start ---------------------------------------------------
def _eval(iteration, **values):
    return {"iteration": iteration, "eval_reward": 0.0, **values}


def test_each_signal_is_read_against_the_runs_own_start():
    # METEOR 0.12 -> 0.19 stays far below the absolute 0.4 line, but is 1.6x the start.
    rows = [_eval(0, eval_meteor=0.12), _eval(5, eval_meteor=0.13), _eval(10, eval_meteor=0.19)]
    warnings = replay(rows, RewardHackingMonitor(thresholds={"eval_meteor": 1.5}))
    assert [w["iteration"] for w in warnings] == [10]
    assert warnings[0]["signals"] == ["eval_meteor"]
    assert "1.58x its start 0.12" in warnings[0]["warning"]
    # The same values from a start of 0.18: no warning.
    rows[0]["eval_meteor"] = 0.18
    assert replay(rows, RewardHackingMonitor(thresholds={"eval_meteor": 1.5})) == []


@pytest.mark.parametrize(
    ("name", "start", "value", "fires"),
    [
        ("eval_distinct_2", 0.9, 0.5, True),  # 1/0.56: shrinks below 1/1.5 of the start
        ("eval_distinct_2", 0.9, 0.7, False),
        ("eval_entropy", 2.5, 1.6, True),
        ("eval_mean_length", 45.0, 9.0, True),  # 5x shorter
        ("eval_mean_length", 20.0, 45.0, True),  # 2.25x longer
        ("eval_mean_length", 40.0, 45.0, False),
        ("eval_template_share", 0.06, 0.5, True),  # a rise of 0.44
        ("eval_template_share", 0.06, 0.3, False),
        ("eval_kl", 0.0, 0.6, True),  # a level: the start is 0
        ("eval_kl", 0.0, 0.1, False),
    ],
)
def test_measures(name, start, value, fires):
    thresholds = {"eval_distinct_2": 1.5, "eval_entropy": 1.5, "eval_mean_length": 2.0}
    thresholds |= {"eval_template_share": 0.4, "eval_kl": 0.5}
    monitor = RewardHackingMonitor(thresholds=thresholds)
    assert monitor.update(_eval(0, **{name: start})) is None
    warning = monitor.update(_eval(5, **{name: value}))
    assert (warning is not None) == fires
    assert (name in monitor.fired) == fires


def test_training_sample_signals_are_smoothed_over_iterations():
    # One odd batch of training samples does not warn; three in a row do.
    monitor = RewardHackingMonitor(thresholds={"completions/template_share": 0.4}, smooth=3)
    shares = [0.1, 0.1, 0.1, 0.1, 0.9, 0.1, 0.1, 0.9, 0.9, 0.9]
    fired = [
        monitor.update({"iteration": i + 1, "completions/template_share": s}) is not None
        for i, s in enumerate(shares)
    ]
    assert fired == [False] * 8 + [True, True]


def test_unknown_threshold_names_the_known_signals():
    with pytest.raises(ValueError, match="unknown signals \\['eval_meteorr'\\]; known: "):
        RewardHackingMonitor(thresholds={"eval_meteorr": 1.5})


def test_score_of_a_collapse_to_nothing_is_alarming():
    signal = SIGNAL_BY_NAME["eval_distinct_2"]
    assert score(signal, 0.0, 0.8) == math.inf
    assert score(SIGNAL_BY_NAME["eval_meteor"], 0.0, 0.1) == 1.0
