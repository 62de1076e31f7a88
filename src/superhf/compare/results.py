"""From run folders and evaluations to results.json and report.md: per-run numbers, means
and standard errors across seeds, divergence rates, the learning rate each method reports.

Aggregation: a group is (method, SuperHF variant, beta, learning rate); its number for a
metric is the mean over seeds of each run's evaluation mean, with the standard error across
seeds. Each (method, variant, beta) reports the learning rate with the best mean train reward
on the training split's held-out prompts, read at the run's last in-run evaluation
(`selection_score`: never the test RM, never the prompts the comparison reports on).
A run diverged when its test reward ends below the start policy's by more than two standard
errors of the difference (each one's standard error over the held-out prompts, `diverged`).
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from superhf.compare import frontier, intervals, update_settings
from superhf.compare.spec import DONE_FILE, PROGRESS_FILE, SETTINGS_FILE, MethodRun
from superhf.evaluation.heldout import mean_se
from superhf.evaluation.monitor_replay import LOG_FILES, replay_run
from superhf.files import json_safe, read_json_lines, read_text

if TYPE_CHECKING:
    from superhf.compare.evaluation import Evaluator
    from superhf.compare.task import Task

METRICS = {
    "test_reward": ("test_reward", "mean"),
    "reward": ("reward", "mean"),
    "meteor": ("meteor", "mean"),
    "kl_per_token": ("kl", "per_token"),
    "kl_exact_per_token": ("kl_exact", "per_token"),
    "entropy": ("entropy", "mean"),
    "length_tokens": ("length", "mean_tokens"),
    "distinct_2": ("distinct_2", None),
}
"""results.json's per-run numbers: name -> where it sits in an evaluation."""


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _value(metrics: dict[str, Any] | None, where: tuple[str, str | None]) -> float | None:
    if not metrics:
        return None
    value = metrics.get(where[0])
    if where[1] is not None:
        value = value.get(where[1]) if isinstance(value, dict) else None
        if isinstance(value, dict):  # KL's per_token is itself a mean_se
            value = value.get("mean")
    return value if isinstance(value, int | float) else None


def step_costs(progress: list[dict[str, Any]]) -> dict[str, float | None]:
    """Median wall seconds and sampled tokens per update. The median, because SuperHF's steps
    with an in-run evaluation (and the first, which loads models) are not what a step costs.
    Step 0 (the start's evaluation) is no update."""
    progress = [p for p in progress if p.get("step", 1) >= 1]
    walls = [p.get("wall_time_s") for p in progress]
    tokens = [p.get("sampled_tokens") for p in progress]
    if len(progress) < 2 or None in walls or None in tokens:
        return {
            "seconds_per_step": None,
            "tokens_per_step": None,
            "seconds_per_1k_tokens": None,
            **stage_costs(progress),
        }
    seconds = statistics.median(b - a for a, b in zip(walls, walls[1:], strict=False))
    per_step = statistics.median(b - a for a, b in zip(tokens, tokens[1:], strict=False))
    return {
        "seconds_per_step": seconds,
        "tokens_per_step": per_step,
        "seconds_per_1k_tokens": 1000 * seconds / per_step if per_step else None,
        **stage_costs(progress),
    }


STAGES = ("sampling", "scoring", "update")


def stage_costs(progress: list[dict[str, Any]]) -> dict[str, float | None]:
    """Median seconds per update of each stage (progress.jsonl's seconds_<stage>): what the
    implementations spend where (superhf's own sampler, TRL's `generate`)."""
    out = {}
    for stage in STAGES:
        values = [p[f"seconds_{stage}"] for p in progress if p.get(f"seconds_{stage}") is not None]
        out[f"seconds_{stage}_per_step"] = statistics.median(values) if values else None
    return out


def gains_per_token(
    numbers: dict[str, Any], start: dict[str, Any], sampled: int | None
) -> dict[str, float | None]:
    """Held-out reward gained over the start policy per 1,000 sampled completion tokens."""
    out: dict[str, float | None] = {}
    for key in ("reward", "test_reward"):
        end, begin = numbers.get(key), start.get(key)
        ok = end is not None and begin is not None and sampled
        out[f"{key}_gain_per_1k_tokens"] = 1000 * (end - begin) / sampled if ok else None
    return out


def monitor_warnings(folder: Path) -> list[dict[str, Any]] | None:
    """{iteration, signals, warning} of every row where the reward-hacking monitor warns on a
    run's log, replayed with today's thresholds (`superhf monitor`), so every run of a
    comparison is read by one rule even if the defaults were chosen again while it ran:
    metrics.jsonl (SuperHF), else monitor.jsonl (GRPO/RLOO watched by `RewardHackingCallback`).
    None: the run has no monitor log (best-of-n, SFT, PPO, a GRPO/RLOO run without in-run
    evaluation)."""
    if not any((folder / name).is_file() for name in LOG_FILES):
        return None
    return [
        {"iteration": w["iteration"], "signals": w["signals"], "warning": w["warning"]}
        for w in replay_run(folder).warnings
    ]


def run_record(
    run: MethodRun, status: dict[str, Any], metrics: dict[str, Any] | None, redone: bool
) -> dict[str, Any]:
    """Everything about one run: its settings, how it ended, along the run, its evaluation."""
    folder = Path(run.output_dir)
    progress = []
    if (folder / PROGRESS_FILE).is_file():
        text = read_text(folder / PROGRESS_FILE, "progress")
        progress = [line.value for line in read_json_lines(text, str(folder), "p", True)]
    done = _read_json(folder / DONE_FILE) or {}
    # done.json's fields are each method's own; progress.jsonl's are the contract's
    sampled = done.get("sampled_tokens", progress[-1].get("sampled_tokens") if progress else None)
    if run.method == "best_of_n" and metrics:
        sampled = metrics.get("sampled_tokens")
    logged = monitor_warnings(folder)
    settings = _read_json(folder / SETTINGS_FILE)
    return {
        "name": folder.name,
        "method": run.method,
        "variant": run.variant,
        "beta": run.beta,
        "learning_rate": run.learning_rate,
        "seed": run.seed,
        "status": status["status"],
        "reason": status.get("reason"),
        "ran_in_this_invocation": redone,
        "folder": str(folder),
        "sampled_tokens": sampled,
        "steps": done.get("steps", sum(p.get("step", 1) >= 1 for p in progress)),
        "optimizer_steps": done.get("optimizer_steps"),
        "update_settings": update_settings.effective(run.method, settings),
        "budget_reached": None
        if run.method in ("best_of_n", "sft") or status["status"] != "done"
        else sampled is not None and sampled >= run.sampled_token_budget,
        "wall_time_s": done.get("wall_time_s")
        or (progress[-1].get("wall_time_s") if progress else None),
        "peak_memory_mb": max(
            (p["peak_memory_mb"] for p in progress if p.get("peak_memory_mb") is not None),
            default=None,
        ),
        # the log replayed; done.json's list (the warnings while it ran) where no log is left
        "reward_hacking": logged if logged is not None else done.get("reward_hacking", []),
        "monitored": "reward_hacking" in done or logged is not None,
        "done": done,
        "settings": settings,
        "progress": progress,
        "numbers": {k: _value(metrics, where) for k, where in METRICS.items()},
        **step_costs(progress),
        "eval": metrics,
    }


def headline_line(name: str, metrics: dict[str, Any] | None, record: dict[str, Any] | None) -> str:
    """The console line of a finished run."""
    if record is not None and record["status"] != "done":
        return f"{name}: {record['status']} ({record['reason']})"

    def num(key: str, digits: int = 3) -> str:
        value = _value(metrics, METRICS[key])
        return "n/a" if value is None else f"{value:+.{digits}f}"

    text = (
        f"{name}: test reward {num('test_reward')} | train reward {num('reward')} | "
        f"METEOR {num('meteor')} | exact KL/token {num('kl_exact_per_token', 4)} | "
        f"k1 KL est. {num('kl_per_token', 4)} | "
        f"entropy {num('entropy', 2)}"
    )
    if record is not None:
        tokens, wall = record["sampled_tokens"], record["wall_time_s"]
        text += f" | {tokens if tokens is not None else 'n/a'} sampled tokens"
        text += f" | {wall:.0f} s" if wall is not None else ""
    return text


def label(method: str, beta: float, variant: str = "") -> str:
    if method == "superhf":
        arm = f"superhf[{variant}]" if variant else "superhf"
        return f"{arm} b={beta:g}" + (" (KL 0)" if beta == 0 else "")
    if method in ("grpo", "rloo", "ppo"):
        return f"{method} b={beta:g}"
    return method


def arm_key(record: dict[str, Any]) -> tuple:
    """What a group of seeds shares: (method, variant, beta, learning rate)."""
    return (record["method"], record.get("variant", ""), record["beta"], record["learning_rate"])


PER_RUN = [
    "sampled_tokens",
    "wall_time_s",
    "peak_memory_mb",
    "seconds_per_step",
    "tokens_per_step",
    "seconds_per_1k_tokens",
    "seconds_sampling_per_step",
    "seconds_scoring_per_step",
    "seconds_update_per_step",
    "reward_gain_per_1k_tokens",
    "test_reward_gain_per_1k_tokens",
]
"""Numbers of a run's cost and efficiency, aggregated across seeds like the METRICS."""


def with_gains(record: dict[str, Any], start: dict[str, Any]) -> dict[str, Any]:
    """The run's record with its held-out reward gained per 1k sampled tokens (`gains_per_token`)
    when it trained on samples (best-of-n and SFT sample none to train on)."""
    if record["status"] != "done" or record["method"] in ("best_of_n", "sft"):
        return record
    return {**record, **gains_per_token(record["numbers"], start, record["sampled_tokens"])}


def selection_score(members: list[dict[str, Any]]) -> tuple[float | None, str]:
    """What picks an arm's learning rate: the mean over seeds of each run's last in-run train
    reward on the training split's held-out prompts (never the test RM, never the prompts the
    comparison reports on); the final evaluation's train reward when a run has no in-run one."""
    in_run = [
        next(
            (p["eval_reward"] for p in reversed(m["progress"]) if p.get("eval_reward") is not None),
            None,
        )
        for m in members
    ]
    if in_run and all(v is not None for v in in_run):
        return statistics.fmean(in_run), "in-run train reward, training split's held-out prompts"
    final = [m["numbers"].get("reward") for m in members]
    if final and all(v is not None for v in final):
        return statistics.fmean(
            final
        ), "final train reward on the eval prompts (no in-run evaluation)"
    return None, "none"


def diverged(record: dict[str, Any], start: dict[str, Any]) -> bool | None:
    """Whether the run's final test reward is below the start's by more than 2 standard errors
    of the difference (`start["test_reward_se"]` and the run's own, over the held-out prompts);
    None when either reward is unknown. A run 0.02 below the start with a per-prompt standard
    error of 0.03 has not diverged."""
    end, begin = record["numbers"].get("test_reward"), start.get("test_reward")
    if end is None or begin is None:
        return None
    se = ((record.get("eval") or {}).get("test_reward") or {}).get("se") or 0.0
    se_start = start.get("test_reward_se") or 0.0
    return end < begin - 2 * math.sqrt(se**2 + se_start**2)


def summarize_groups(
    records: list[dict[str, Any]],
    start: dict[str, Any],
    selection_seeds: list[int] | None = None,
) -> list[dict]:
    """Mean and standard error across seeds per (method, beta, lr); the chosen lr marked.
    `start`: the start policy's numbers, for the divergence rate. `records`: `with_gains`'.
    `selection_seeds`: the seeds the rate is chosen on (a sweep's; later seeds ran only at
    the chosen rate and must not move the choice). None: every seed."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in records:
        if r["status"] == "done":
            groups.setdefault(arm_key(r), []).append(r)
    rows = []
    for (method, variant, beta, lr), members in groups.items():
        row: dict[str, Any] = {
            "label": label(method, beta, variant),
            "method": method,
            "variant": variant,
            "beta": beta,
            "learning_rate": lr,
            "seeds": [m["seed"] for m in members],
        }
        for key in [*METRICS, *PER_RUN]:
            source = [m["numbers"].get(key, m.get(key)) for m in members]
            values = [v for v in source if v is not None]
            row[key] = mean_se(values) if values else None
            if key in ("test_reward", "reward") and len(members) == 1 and row[key]:
                # one seed: the standard error over the eval prompts is the only interval
                row[key]["se_over_prompts"] = ((members[0]["eval"] or {}).get(key) or {}).get("se")
        flags = [diverged(m, start) for m in members]
        row["divergence_rate"] = sum(flags) / len(flags) if flags and None not in flags else None
        row["selection_score"], row["selection_source"] = selection_score(
            [m for m in members if selection_seeds is None or m["seed"] in selection_seeds]
        )
        row["reward_hacking_runs"] = sum(bool(m["reward_hacking"]) for m in members)
        row["monitored_runs"] = sum(bool(m.get("monitored")) for m in members)
        rows.append(row)
    best: dict[tuple, dict[str, Any]] = {}
    for row in rows:
        key = arm_key(row)[:3]
        score = row["selection_score"]
        held = best.get(key)
        if held is None or (
            score is not None
            and score > (held["selection_score"] if held["selection_score"] is not None else -1e30)
        ):
            best[key] = row
    rates: dict[tuple, set[float]] = {}  # every rate planned, finished or not: a report made
    for r in records:  # mid-sweep must not call a choice its edge while higher rates are queued
        rates.setdefault(arm_key(r)[:3], set()).add(r["learning_rate"])
    for row in rows:
        row["chosen_learning_rate"] = best[arm_key(row)[:3]] is row
        swept = rates[arm_key(row)[:3]]
        edge = None  # a choice at the sweep's edge may be beaten by a rate beyond it
        if row["chosen_learning_rate"] and len(swept) > 1:
            if row["learning_rate"] == max(swept):
                edge = "highest"
            elif row["learning_rate"] == min(swept):
                edge = "lowest"
        row["chosen_at_sweep_edge"] = edge
    return rows


def machine() -> dict[str, Any]:
    """Where the numbers were measured."""

    def version(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        **{
            name: version(name)
            for name in ("torch", "transformers", "peft", "accelerate", "trl", "superhf")
        },
    }


def build_results(
    cfg: Any,
    task: Task,
    evaluator: Evaluator,
    start: dict[str, Any],
    records: list[dict[str, Any]],
    started: float,
) -> dict[str, Any]:
    start_numbers = {k: _value(start, w) for k, w in METRICS.items()}
    records = [with_gains(r, start_numbers) for r in records]
    start_se = (start.get("test_reward") or {}).get("se") if isinstance(start, dict) else None
    groups = summarize_groups(
        records, {**start_numbers, "test_reward_se": start_se}, cfg.sweep_seeds
    )
    headline = [g for g in groups if g["chosen_learning_rate"]]
    arms = [(row, [r for r in records if arm_key(r) == arm_key(row)]) for row in headline]
    # one reward for training and testing (a reward known exactly): one claim each
    same = task.reward_funcs == [task.test_reward_model]
    rewards = ("test_reward",) if same else ("test_reward", "reward")
    return json_safe(
        {
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "settings": cfg.to_dict(),
            "task": {
                **task.info,
                "train_file": task.train_file,
                "eval_file": task.eval_file,
                "sft_file": task.sft_file,
                "reward_funcs": task.reward_funcs,
                "test_reward_model": task.test_reward_model,
            },
            "evaluation_settings": evaluator.settings(),
            "machine": machine(),
            "wall_time_s": time.perf_counter() - started,
            "start": {"numbers": start_numbers, "eval": start},
            "summary": groups,
            "headline": headline,
            "claims": intervals.claims(arms, cfg.level_margin, rewards),
            "gains_over_start": intervals.gains_over_start(
                arms,
                {"status": "done", "folder": str(Path(cfg.output_dir) / "start"), "eval": start},
                cfg.level_margin,
                rewards,
            ),
            "frontier": frontier.positions(groups),
            "update_settings": {
                "matched": update_settings.MATCHED,
                "mismatches": update_settings.mismatches(records, cfg.superhf_variants),
                "allowed": cfg.allow_mismatched_updates,
                "table": update_settings.settings_table(records),
            },
            "runs": records,
            "skipped": [
                {"name": r["name"], "reason": r["reason"]}
                for r in records
                if r["status"] == "skipped"
            ],
            "failed": [
                {"name": r["name"], "reason": r["reason"]}
                for r in records
                if r["status"] == "failed"
            ],
            "pending": [r["name"] for r in records if r["status"] == "pending"],
        }
    )
