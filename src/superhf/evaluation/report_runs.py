"""Training runs as `superhf report` reads them: a run folder's metrics, settings and eval.json
(`load_run`), the reward-hacking monitor's warnings (`Run.warnings`), the numbers the report
compares (first and last windows, rolling means) and the labels that tell runs apart. Below the
report's plots, tables and page; imports none of them.

A folder with metrics.jsonl is a `superhf train` run; one with only monitor.jsonl is a
transformers/TRL run watched by `RewardHackingCallback`, whose rows stand in for the metrics.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from superhf.errors import ConfigError
from superhf.files import (
    CONFIG_FILE,
    EVAL_FILE,
    METRICS_FILE,
    MONITOR_FILE,
    read_json_lines,
    read_text,
)

IGNORED_SETTINGS = {
    "output_dir",
    "resume_from_checkpoint",
    "logging_steps",
    "report_to",
    "log_completions",
    "save_steps",
    "save_total_limit",
}
"""Settings that differ between runs without changing what is learned."""
KEY_SETTINGS = ["model_name_or_path", "beta", "learning_rate", "num_generations", "use_peft"]
"""Shown for a single run, where no setting 'differs'."""


@dataclass(frozen=True)
class HackingWarning:
    """One warning of the reward-hacking monitor, as a metrics row logged it."""

    iteration: int
    text: str
    """The full warning (`reward_hacking`)."""
    signals: list[str] | None
    """The signals that fired (`reward_hacking_signals`); None where the run predates them."""
    row: int
    """Its row's index in `Run.metrics`: warnings in neighbouring rows are one streak."""


def _signals(value: Any) -> list[str] | None:
    """`reward_hacking_signals` as a list of names; None when absent or not a list."""
    if not isinstance(value, list):
        return None
    return [str(name) for name in value]


@dataclass
class Run:
    """One training run as read from its folder."""

    path: Path
    name: str
    metrics: list[dict[str, Any]]
    config: dict[str, Any]
    eval: dict[str, Any] | None = None
    """This run's entry in its eval.json, if it has one."""
    notes: list[str] = field(default_factory=list)
    """Problems met while reading it (bad lines, unmatched eval.json)."""
    label: str = ""
    """What distinguishes it from the other runs, e.g. `beta=0.35`."""

    @property
    def num_iterations(self) -> int:
        """Training iterations logged: the iteration-0 row (`eval_on_start`) is an evaluation
        of the starting policy, not an iteration."""
        return sum(1 for i, m in enumerate(self.metrics, start=1) if int(m.get("iteration", i)) > 0)

    def series(self, key: str) -> tuple[list[int], list[float]]:
        """(iterations, values) where `key` was logged as a finite number."""
        xs, ys = [], []
        for i, m in enumerate(self.metrics, start=1):
            value = m.get(key)
            numeric = isinstance(value, int | float) and not isinstance(value, bool)
            if numeric and math.isfinite(value):
                xs.append(int(m.get("iteration", i)))
                ys.append(float(value))
        return xs, ys

    def hacking(self) -> list[tuple[int, str]]:
        """(iteration, warning) for every iteration where the reward-hacking monitor fired."""
        return [
            (int(m.get("iteration", i)), str(m["reward_hacking"]))
            for i, m in enumerate(self.metrics, start=1)
            if m.get("reward_hacking")
        ]

    def warnings(self) -> list[HackingWarning]:
        """Every warning of the monitor with the signals that fired (for the page's marks and
        its list of warnings)."""
        return [
            HackingWarning(
                int(m.get("iteration", i + 1)),
                str(m["reward_hacking"]),
                _signals(m.get("reward_hacking_signals")),
                i,
            )
            for i, m in enumerate(self.metrics)
            if m.get("reward_hacking")
        ]


def _read_metrics(path: Path, notes: list[str]) -> list[dict[str, Any]]:
    """metrics.jsonl; a torn line is skipped; an iteration logged twice (resume): the last wins."""
    by_iteration: dict[int, dict[str, Any]] = {}
    for line in read_json_lines(read_text(path, "RUN_DIR"), str(path), "RUN_DIR", skip_bad=True):
        if line.problem is not None:
            notes.append(f"{line.problem}, skipped")
            continue
        by_iteration[int(line.value.get("iteration", len(by_iteration) + 1))] = line.value
    return [by_iteration[k] for k in sorted(by_iteration)]


def _eval_entry(folder: Path, notes: list[str]) -> dict[str, Any] | None:
    path = folder / EVAL_FILE
    if not path.is_file():
        return None
    try:
        models = json.loads(path.read_text(encoding="utf-8")).get("models", {})
    except (json.JSONDecodeError, AttributeError):
        notes.append(f"{path} is not valid eval.json, ignored")
        return None
    for entry in models.values():
        if Path(str(entry.get("path", ""))).expanduser().resolve() == folder.resolve():
            return entry
    if len(models) == 1:
        return next(iter(models.values()))
    notes.append(f"{path} evaluates several models, none of them this run; ignored")
    return None


def load_run(path: str | Path) -> Run:
    """Read a run folder; ConfigError when it is not one."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"RUN_DIR: no such folder {str(path)!r}.")
    notes: list[str] = []
    metrics_path = folder / METRICS_FILE
    if not metrics_path.is_file() and (folder / MONITOR_FILE).is_file():
        metrics_path = folder / MONITOR_FILE
        notes.append(
            f"{folder}: no {METRICS_FILE}, read {MONITOR_FILE} (a run watched by "
            "RewardHackingCallback): iterations are optimizer steps"
        )
    if not metrics_path.is_file():
        raise ConfigError(
            f"RUN_DIR: {str(path)!r} has no {METRICS_FILE} (nor {MONITOR_FILE}); give the "
            "output_dir of `superhf train`, or of a trainer watched by RewardHackingCallback."
        )
    metrics = _read_metrics(metrics_path, notes)
    config: dict[str, Any] = {}
    if (folder / CONFIG_FILE).is_file():
        loaded = yaml.safe_load((folder / CONFIG_FILE).read_text(encoding="utf-8"))
        config = loaded if isinstance(loaded, dict) else {}
    else:
        notes.append(f"{folder}: no {CONFIG_FILE}, settings unknown")
    return Run(folder, folder.resolve().name, metrics, config, _eval_entry(folder, notes), notes)


# --- numbers --------------------------------------------------------------------------------


def window(n: int) -> int:
    """First/last-window size: a quarter of the points, at least one."""
    return max(1, n // 4)


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def last_window_mean(values: list[float]) -> float | None:
    return _mean(values[-window(len(values)) :])


def first_window_mean(values: list[float]) -> float | None:
    return _mean(values[: window(len(values))])


def rolling_mean(values: list[float], size: int) -> list[float]:
    """Trailing mean over `size` points (fewer at the start)."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= size:
            total -= values[i - size]
        out.append(total / min(i + 1, size))
    return out


def format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str) and ("/" in value or value.startswith("embedded:")):
        return value.rstrip("/").rsplit("/", 1)[-1].removeprefix("embedded:")
    if isinstance(value, list):
        return " ".join(map(str, value))
    return str(value)


def differing_settings(runs: list[Run]) -> list[str]:
    """Settings whose values are not the same in every run, in config order."""
    keys: list[str] = []
    for run in runs:
        keys += [k for k in run.config if k not in keys and k not in IGNORED_SETTINGS]
    return [k for k in keys if len({repr(r.config.get(k)) for r in runs}) > 1]


def label_runs(runs: list[Run]) -> list[str]:
    """Set each run's label from its distinguishing settings (its name when none differ)."""
    keys = differing_settings(runs) if len(runs) > 1 else []
    for run in runs:
        parts = [f"{k}={format_value(run.config.get(k))}" for k in keys[:3]]
        run.label = ", ".join(parts) or run.name
    if len({r.label for r in runs}) < len(runs):  # labels that clash: add the folder name
        for run in runs:
            run.label = f"{run.name} ({run.label})" if run.label != run.name else run.name
    return keys
