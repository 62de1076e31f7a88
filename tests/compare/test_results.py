"""The numbers of results.json: per-step costs from progress.jsonl, gains per token, and the
reward-hacking monitor's warnings of every run."""

from __future__ import annotations

import json

import pytest

from superhf.compare.report import _edges, _monitor_lines
from superhf.compare.results import gains_per_token, run_record, step_costs, summarize_groups
from superhf.compare.spec import DONE_FILE, PROGRESS_FILE, MethodRun
from superhf.files import METRICS_FILE, MONITOR_FILE


def test_step_costs_are_medians_so_an_evaluation_step_does_not_count():
    progress = [  # step 3 held an in-run evaluation (40 s more)
        {"wall_time_s": 30.0, "sampled_tokens": 100},
        {"wall_time_s": 40.0, "sampled_tokens": 200},
        {"wall_time_s": 90.0, "sampled_tokens": 290},
        {"wall_time_s": 101.0, "sampled_tokens": 400},
    ]
    costs = step_costs(progress)
    assert costs["seconds_per_step"] == 11.0 and costs["tokens_per_step"] == 100
    assert costs["seconds_per_1k_tokens"] == pytest.approx(110.0)
    assert step_costs(progress[:1])["seconds_per_step"] is None


def test_gains_per_token_are_over_the_start_and_none_when_unknown():
    gains = gains_per_token({"reward": 0.5, "test_reward": None}, {"reward": 0.1}, 2000)
    assert gains["reward_gain_per_1k_tokens"] == pytest.approx(0.2)
    assert gains["test_reward_gain_per_1k_tokens"] is None
    assert gains_per_token({"reward": 0.5}, {"reward": 0.1}, 0)["reward_gain_per_1k_tokens"] is None


def _folder(tmp_path, method: str, done: dict, logs: dict[str, list[dict]]) -> MethodRun:
    """A finished run folder written by hand (nothing trained)."""
    folder = tmp_path / f"{method}-s0"
    folder.mkdir()
    (folder / DONE_FILE).write_text(json.dumps({"method": method, **done}))
    (folder / PROGRESS_FILE).write_text(json.dumps({"step": 1, "sampled_tokens": 40}) + "\n")
    for name, rows in logs.items():
        (folder / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return MethodRun(
        method=method, output_dir=str(folder), prompts_per_step=2, sampled_token_budget=40
    )


def test_a_trl_runs_monitor_warnings_are_collected_and_reported(tmp_path):
    """GRPO/RLOO write their monitor's rows to monitor.jsonl: results.json replays every run's
    log with today's thresholds (a warning logged while it ran under other thresholds is not
    taken on trust), lists them as it lists SuperHF's, and report.md beside every run."""
    rows = [
        {"iteration": 0, "eval_distinct_2": 0.9, "reward_hacking": None},
        {"iteration": 2, "eval_distinct_2": 0.85, "reward_hacking": "logged by old thresholds"},
        {"iteration": 4, "eval_distinct_2": 0.3, "reward_hacking": None},
    ]
    done = {"status": "done"}
    grpo = run_record(_folder(tmp_path, "grpo", {}, {MONITOR_FILE: rows}), done, None, False)
    assert [w["iteration"] for w in grpo["reward_hacking"]] == [4]
    warning = grpo["reward_hacking"][0]["warning"]
    assert warning.startswith("eval_distinct_2 0.3 (1/3.00 of its start 0.9")
    assert grpo["monitored"]
    superhf = run_record(
        _folder(tmp_path, "superhf", {"reward_hacking": ["stale"]}, {METRICS_FILE: rows[:2]}),
        done,
        None,
        False,
    )
    assert superhf["reward_hacking"] == [] and superhf["monitored"]
    sft = run_record(_folder(tmp_path, "sft", {}, {}), done, None, False)
    assert sft["reward_hacking"] == [] and not sft["monitored"]

    groups = summarize_groups([grpo, superhf, sft], {})
    by_method = {g["method"]: g for g in groups}
    assert [by_method[m]["reward_hacking_runs"] for m in ("grpo", "superhf", "sft")] == [1, 0, 0]
    assert [by_method[m]["monitored_runs"] for m in ("grpo", "superhf", "sft")] == [1, 1, 0]
    lines = _monitor_lines([grpo, superhf, sft])
    assert grpo["reward_hacking"][0]["signals"] == ["eval_distinct_2"]
    first = "- grpo-s0: warned at 1 iteration, first at iteration 4: "
    assert f"{first}{warning}. Signals: eval_distinct_2." in lines
    assert "- superhf-s0: no warning" in lines and "- sft-s0: not monitored" in lines
    running = {**superhf, "name": "superhf-s1", "status": "pending"}  # report_only, mid-run
    assert not any("superhf-s1" in line for line in _monitor_lines([running]))


def test_the_rate_is_chosen_on_the_training_splits_held_out_prompts_not_the_reported_ones():
    from superhf.compare.results import summarize_groups

    def record(lr, seed, in_run, final):
        return {
            "method": "grpo",
            "variant": "",
            "beta": 0.0,
            "learning_rate": lr,
            "seed": seed,
            "status": "done",
            "reward_hacking": [],
            "eval": None,
            "progress": [
                {"step": 1, "eval_reward": in_run - 1},
                {"step": 2, "eval_reward": in_run},
            ],
            "numbers": {"reward": final, "test_reward": final},
        }

    # 1e-3 wins on the reported eval prompts, 5e-4 on the in-run held-out prompts
    records = [record(5e-4, s, in_run=0.5, final=0.1) for s in (0, 1)]
    records += [record(1e-3, s, in_run=0.2, final=0.9) for s in (0, 1)]
    rows = summarize_groups(records, {"test_reward": 0.0})
    chosen = [r for r in rows if r["chosen_learning_rate"]]
    assert [r["learning_rate"] for r in chosen] == [5e-4]
    assert chosen[0]["selection_score"] == 0.5
    assert chosen[0]["selection_source"].startswith("in-run train reward")
    for r in records:  # without in-run evaluations: the final train reward, said so
        r["progress"] = [{"step": 1}]
    chosen = [r for r in summarize_groups(records, {}) if r["chosen_learning_rate"]]
    assert [r["learning_rate"] for r in chosen] == [1e-3]
    assert chosen[0]["selection_source"].startswith("final train reward")
    # 1e-3 is the highest rate swept: a rate beyond it might win, and the report says so
    assert chosen[0]["chosen_at_sweep_edge"] == "highest"
    lines = _edges(chosen)
    assert lines[0].startswith("Chosen at the edge of the sweep: grpo b=0 (0.001, the highest)")
    queued = [{**record(2e-3, 0, in_run=0.0, final=0.0), "status": "pending"}]
    chosen = [r for r in summarize_groups(records + queued, {}) if r["chosen_learning_rate"]]
    assert chosen[0]["learning_rate"] == 1e-3  # mid-sweep: 2e-3 is queued, so not the edge
    assert chosen[0]["chosen_at_sweep_edge"] is None
    records += [record(2e-3, s, in_run=0.0, final=0.0) for s in (0, 1)]
    chosen = [r for r in summarize_groups(records, {}) if r["chosen_learning_rate"]]
    assert chosen[0]["learning_rate"] == 1e-3 and chosen[0]["chosen_at_sweep_edge"] is None
    assert _edges(chosen) == []


def test_a_run_diverged_only_when_below_the_start_by_more_than_its_noise():
    from superhf.compare.results import diverged

    def run(end, se):
        return {"numbers": {"test_reward": end}, "eval": {"test_reward": {"mean": end, "se": se}}}

    start = {"test_reward": 0.30, "test_reward_se": 0.03}
    assert diverged(run(0.28, 0.03), start) is False  # 0.02 below: within the noise
    assert diverged(run(0.15, 0.03), start) is True  # 0.15 below: 3.5 standard errors
    assert diverged(run(0.35, 0.03), start) is False
    assert diverged({"numbers": {"test_reward": None}}, start) is None
