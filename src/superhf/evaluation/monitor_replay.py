"""`superhf monitor RUN_DIR ...`: replay a run's logged metrics through the reward-hacking monitor.

    superhf monitor runs/my-run                       # a table of warnings, then a summary
    superhf monitor runs/a runs/b --json              # [{run, iteration, sampled_tokens, ...}]
    superhf monitor runs/a --thresholds eval_distinct_2=2 kl=inf

The monitor (`superhf.evaluation.monitor`) is a pure function of the metrics rows, so a fresh
`RewardHackingMonitor` fed a run's rows in order gives the warnings the trainer gave, whether
the run is finished or still running. It reads `metrics.jsonl` (`superhf train`), else
`monitor.jsonl` (a transformers/TRL trainer with `RewardHackingCallback`, the GRPO/RLOO runs of
`superhf compare` that evaluate along the run). Nothing here loads torch: a wrong folder or
threshold is refused at once.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from superhf.console import make_console
from superhf.errors import ConfigError
from superhf.evaluation.monitor import SIGNAL_BY_NAME, RewardHackingMonitor, replay
from superhf.files import (
    CONFIG_FILE,
    METRICS_FILE,
    MONITOR_FILE,
    PROGRESS_FILE,
    read_json_lines,
    read_text,
)
from superhf.settings import check_types, config_field, parse_config_args

LOG_FILES = (METRICS_FILE, MONITOR_FILE)
"""What the monitor replays, in this order of preference."""

DESCRIPTION = (
    "Replay the reward-hacking monitor over one or more runs' logs and print every warning. "
    "The monitor reads the metrics a run logs: metrics.jsonl of `superhf train` (iteration 0 is "
    "the start's evaluation), else monitor.jsonl of a transformers/TRL trainer watched by "
    "RewardHackingCallback (the GRPO/RLOO runs of `superhf compare` that evaluate along the "
    "run; iteration = optimizer step). It replays them, in order, through the same rule the "
    "trainer applied while training (superhf.evaluation.monitor), so the warnings are the "
    "run's own, for a finished run or one still running; the window and meteor_threshold "
    "come from the run's config.yaml when it has them. Each signal is read against the same "
    "run's start, never against an absolute line: a warning names each signal that passed "
    "its threshold, its value, its start and the score (e.g. 'eval_distinct_2 0.3 (1/3.00 of "
    "its start 0.9; threshold 1.5)': the held-out answers' distinct-2 fell to a third of the "
    "start's, past the 1.5x the monitor allows). eval_* signals come from the held-out answers "
    "at each evaluation; completions/* and kl from the training samples, smoothed; "
    "'divergence' means the train reward rose while the held-out test reward of the same "
    "answers fell by more than two standard errors. A warning is a reason to read the "
    "answers (eval_completions.jsonl), not proof of hacking; docs/MONITOR.md says what each "
    "signal catches and misses and how the thresholds were chosen."
)


@dataclass
class MonitorConfig:
    """Settings of `superhf monitor`."""

    run_dirs: list[str] = config_field(
        [],
        "Run folders holding metrics.jsonl (`superhf train`) or monitor.jsonl "
        "(RewardHackingCallback).",
        "input",
        positional="RUN_DIR",
    )
    thresholds: list[str] = config_field(
        [],
        "Override a signal's threshold for this replay, as SIGNAL=VALUE (e.g. "
        "eval_distinct_2=2 kl=inf; inf: never warns). Signals: " + ", ".join(SIGNAL_BY_NAME),
        "monitor",
    )
    json: bool = config_field(
        False,
        "Print the warnings as a JSON list of {run, iteration, sampled_tokens, signals, "
        "warning} on stdout instead of tables.",
        "output",
    )

    def __post_init__(self) -> None:
        check_types(self)
        if not self.run_dirs:
            raise ConfigError("RUN_DIR: give at least one run folder.")
        parse_thresholds(self.thresholds)


def parse_monitor_args(argv: list[str]) -> MonitorConfig:
    """`superhf monitor RUN_DIR [RUN_DIR ...] [--json] [--thresholds SIGNAL=VALUE ...]`."""
    return parse_config_args(MonitorConfig, argv, prog="superhf monitor", description=DESCRIPTION)


def parse_thresholds(items: list[str]) -> dict[str, float]:
    """`["eval_kl=0.3", ...]` as {signal: threshold}; a ConfigError naming a bad item and
    the known signals."""
    known = ", ".join(SIGNAL_BY_NAME)
    out: dict[str, float] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"thresholds: {item!r} is not SIGNAL=VALUE (signals: {known}).")
        if key not in SIGNAL_BY_NAME:
            raise ConfigError(f"thresholds: unknown signal {key!r}; known signals: {known}.")
        try:
            value = float(text)
        except ValueError:
            raise ConfigError(
                f"thresholds: {key}={text!r} is not a number (e.g. {key}=1.5, or inf: never)."
            ) from None
        if math.isnan(value):
            raise ConfigError(f"thresholds: {key} must be a number, got nan.")
        out[key] = value
    return out


# --- a run's log -------------------------------------------------------------------------------


class NoMonitorLog(ConfigError):
    """A `superhf compare` run the monitor did not watch (best-of-n, SFT, PPO, GRPO/RLOO
    without in-run evaluation): skipped with a note beside other runs, refused alone."""


def find_log(run_dir: str | Path) -> Path:
    """The log the monitor replays in `run_dir` (`LOG_FILES`); a ConfigError saying why not."""
    folder = Path(run_dir)
    if not folder.exists():
        raise ConfigError(f"RUN_DIR {str(folder)!r}: no such folder.")
    if not folder.is_dir():
        raise ConfigError(f"RUN_DIR {str(folder)!r} is a file; give the run's folder.")
    for name in LOG_FILES:
        if (folder / name).is_file():
            return folder / name
    wanted = f"no {METRICS_FILE} (superhf train) nor {MONITOR_FILE} (RewardHackingCallback)"
    if (folder / PROGRESS_FILE).is_file():
        raise NoMonitorLog(
            f"RUN_DIR {str(folder)!r} is a `superhf compare` run with no monitor log ({wanted}): "
            "only SuperHF runs and GRPO/RLOO runs that evaluate along the run (method_settings "
            "eval_steps > 0, num_eval_prompts >= 2) are monitored; best-of-n, SFT and PPO are not."
        )
    inside = sorted(
        p.name for p in folder.iterdir() if p.is_dir() and any((p / n).is_file() for n in LOG_FILES)
    )
    hint = ""
    if inside:
        shown = ", ".join(inside[:5]) + (", ..." if len(inside) > 5 else "")
        hint = f"; its subfolders {shown} have one: pass them (e.g. {folder}/*)"
    raise ConfigError(f"RUN_DIR {str(folder)!r} holds {wanted}{hint}.")


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The log's rows in order; a torn last line (a run being written) is skipped."""
    lines = read_json_lines(read_text(path, "RUN_DIR"), str(path), "RUN_DIR", skip_bad=True)
    return [line.value for line in lines if line.value is not None]


def run_monitor(run_dir: Path, thresholds: dict[str, float] | None = None) -> RewardHackingMonitor:
    """A fresh monitor as the run's trainer made it: `reward_hacking_window` and
    `meteor_threshold` from its config.yaml when there (`superhf train`), else the defaults;
    `thresholds` override single signals."""
    monitor = RewardHackingMonitor()
    config = _read_config(run_dir / CONFIG_FILE)
    window, meteor = config.get("reward_hacking_window"), config.get("meteor_threshold")
    if isinstance(window, int) and not isinstance(window, bool) and window >= 2:
        monitor.window = window
    if isinstance(meteor, int | float) and not isinstance(meteor, bool):
        monitor.meteor_threshold = float(meteor)
    monitor.thresholds.update(thresholds or {})
    return monitor


def _read_config(path: Path) -> dict[str, Any]:
    try:
        value = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    return value if isinstance(value, dict) else {}


@dataclass
class RunReplay:
    """One run's replay: its warnings, and how far the log goes."""

    run: str
    log: Path
    num_rows: int
    last_iteration: Any
    warnings: list[dict[str, Any]] = field(default_factory=list)
    """{run, iteration, sampled_tokens, signals, warning}, one per row that warned."""
    logged: list[Any] = field(default_factory=list)
    """Iterations whose row holds a warning the run itself logged (`reward_hacking`)."""

    def summary(self) -> str:
        """One line: "no warning" or "first warning at iteration N (signals ...)"."""
        span = f"{self.num_rows} rows, up to iteration {self.last_iteration}"
        if not self.warnings:
            return f"no warning ({span})"
        first, n = self.warnings[0], len(self.warnings)
        return (
            f"first warning at iteration {first['iteration']} (signals "
            f"{', '.join(first['signals']) or 'none'}); warnings at {n} "
            f"iteration{'s' if n != 1 else ''} ({span})"
        )


def replay_run(run_dir: str | Path, thresholds: dict[str, float] | None = None) -> RunReplay:
    """Replay one run's log (`find_log`) through a fresh monitor (`run_monitor`)."""
    log = find_log(run_dir)
    rows = read_rows(log)
    found = replay(rows, run_monitor(Path(run_dir), thresholds))
    tokens = {row.get("iteration"): row.get("num_sampled_tokens_total") for row in rows}
    return RunReplay(
        run=str(run_dir),
        log=log,
        num_rows=len(rows),
        last_iteration=rows[-1].get("iteration") if rows else None,
        warnings=[
            {
                "run": str(run_dir),
                "iteration": w["iteration"],
                "sampled_tokens": tokens.get(w["iteration"]),
                "signals": list(w["signals"]),
                "warning": w["warning"],
            }
            for w in found
        ],
        logged=[row.get("iteration") for row in rows if row.get("reward_hacking")],
    )


# --- printing ----------------------------------------------------------------------------------


def warnings_table(replayed: RunReplay) -> Table:
    """Iteration, sampled tokens so far, the signals that fired, the warning."""
    table = Table(title=escape(f"{replayed.run} ({replayed.log.name})"), title_justify="left")
    table.add_column("iteration", justify="right")
    table.add_column("sampled tokens", justify="right")
    table.add_column("signals")
    table.add_column("warning", overflow="fold")
    for w in replayed.warnings:
        tokens = w["sampled_tokens"]
        table.add_row(
            str(w["iteration"]),
            "n/a" if tokens is None else f"{tokens:,}",
            escape(", ".join(w["signals"])),
            escape(w["warning"]),
        )
    return table


def print_replays(replays: list[RunReplay], console: Console, as_json: bool = False) -> None:
    """Tables and summaries, or (`as_json`) every warning as one JSON list on stdout."""
    if as_json:
        rows = [w for r in replays for w in r.warnings]
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    for replayed in replays:
        if replayed.warnings:
            console.print(warnings_table(replayed))
        else:
            console.print(f"[bold]{escape(replayed.run)}[/bold] ({replayed.log.name})")
        console.print(f"  {escape(replayed.summary())}", soft_wrap=True)
        replayed_at = [w["iteration"] for w in replayed.warnings]
        if replayed.logged and replayed.logged != replayed_at:
            console.print(
                f"  note: the run logged warnings at iterations {replayed.logged}; this replay "
                "(today's thresholds or your --thresholds) warns at "
                f"{replayed_at or 'none'}.",
                soft_wrap=True,
            )


def monitor_runs(config: MonitorConfig, console: Console) -> list[RunReplay]:
    """Check every folder first (one ConfigError naming each bad one), then replay and print.
    A `superhf compare` run without a monitor log is skipped with a note on stderr (so that
    `superhf monitor COMPARE_DIR/runs/*` works), unless no folder has a log."""
    thresholds = parse_thresholds(config.thresholds)
    problems: list[str] = []
    skipped: list[str] = []
    run_dirs: list[str] = []
    for run_dir in config.run_dirs:
        try:
            find_log(run_dir)
        except NoMonitorLog as err:
            skipped.append(str(err))
        except ConfigError as err:
            problems.append(str(err))
        else:
            run_dirs.append(run_dir)
    if problems or not run_dirs:
        raise ConfigError(" ".join(problems + skipped))
    notes = make_console()
    for note in skipped:
        notes.print(f"[yellow]skipped:[/yellow] {escape(note)}", soft_wrap=True)
    replays = [replay_run(run_dir, thresholds) for run_dir in run_dirs]
    print_replays(replays, console, config.json)
    return replays
