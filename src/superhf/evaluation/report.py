"""Plots and a Markdown report of training runs: reward, KL, METEOR, reward-hacking warnings;
and report.html, the same runs as one web page with their completions to browse (report_html.py).

    superhf report runs/beta-0.1 runs/beta-0.35 runs/beta-1.0 --output_dir runs/report
    build_report(["runs/beta-0.1", "runs/beta-0.35"], "runs/report")

Each run folder is the output_dir of `superhf train`: metrics.jsonl (one line per iteration,
plus an iteration-0 line for the evaluation of the starting policy, not counted as an iteration),
config.yaml (its settings) and, after `superhf eval RUN --output_dir RUN`, eval.json. The
report compares runs the way the paper compares its KL sweep: reward against METEOR
similarity, one point per run. Metrics a run did not log are skipped, and the report says so.
Per-iteration training rewards come from different prompts each iteration, so they are noisy:
the plots add a rolling mean and the table compares first and last quarters.

This module is the top of the report: runs are read by `report_runs`, drawn by `report_plots`
(report.md) and `report_curves` (report.html), and the page is `report_html`'s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from superhf.console import make_console
from superhf.errors import ConfigError
from superhf.evaluation.report_html import write_html_report
from superhf.evaluation.report_plots import (
    plot_kl,
    plot_meteor,
    plot_reward,
    plot_tradeoff,
    tradeoff_points,
)
from superhf.evaluation.report_runs import (
    KEY_SETTINGS,
    Run,
    first_window_mean,
    format_value,
    label_runs,
    last_window_mean,
    load_run,
    window,
)
from superhf.settings import check_types, config_field, parse_config_args

if TYPE_CHECKING:  # matplotlib loads when a plot is drawn, not for `superhf report --help`
    pass


@dataclass
class ReportConfig:
    """Settings of `superhf report`."""

    run_dirs: list[str] = config_field(
        [], "Run folders of `superhf train`.", "input", positional="RUN_DIR"
    )
    output_dir: str | None = config_field(
        None,
        "Where report.md, report.html and the plots go (default: the run folder, or runs/report).",
        "output",
    )

    def __post_init__(self) -> None:
        check_types(self)
        if not self.run_dirs:
            raise ConfigError("RUN_DIR: give at least one run folder.")


def parse_report_args(argv: list[str]) -> ReportConfig:
    """`superhf report RUN_DIR [RUN_DIR ...] [--output_dir DIR]`."""
    return parse_config_args(
        ReportConfig,
        argv,
        prog="superhf report",
        description="Plots, report.md and report.html of one or more training runs: reward, "
        "KL, METEOR similarity, reward-hacking warnings, and (report.html) every completion to "
        "browse.",
    )


def _num(value: float | None, fmt: str = "+.3f") -> str:
    return "n/a" if value is None or not math.isfinite(value) else format(value, fmt)


def _runs_table(runs: list[Run], keys: list[str]) -> list[str]:
    settings = keys if len(runs) > 1 else [k for k in KEY_SETTINGS if k in runs[0].config]
    head = ["run", *settings, "iterations", "train reward first → last quarter"]
    head += ["eval reward (last)", "test reward (last)", "KL (last quarter)"]
    head += ["METEOR (last) [95% CI]", "reward-hacking warnings"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for run in runs:
        rewards = run.series("reward")[1]
        meteor = run.series("eval_meteor")
        meteor_text = "n/a"
        if meteor[0]:
            low = dict(zip(*run.series("eval_meteor_ci_low"), strict=True)).get(meteor[0][-1])
            high = dict(zip(*run.series("eval_meteor_ci_high"), strict=True)).get(meteor[0][-1])
            meteor_text = f"{meteor[1][-1]:.3f}"
            if low is not None and high is not None:
                meteor_text += f" [{low:.3f}, {high:.3f}]"
        eval_reward, test_reward = run.series("eval_reward")[1], run.series("eval_test_reward")[1]
        cells = [
            f"`{run.name}`",
            *[format_value(run.config.get(k, "n/a")) for k in settings],
            str(run.num_iterations),
            f"{_num(first_window_mean(rewards))} → {_num(last_window_mean(rewards))}"
            f" (k={window(len(rewards))})",
            _num(eval_reward[-1] if eval_reward else None),
            _num(test_reward[-1] if test_reward else None),
            _num(last_window_mean(run.series("kl")[1]), ".4f"),
            meteor_text,
            str(len(run.hacking())),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _eval_table(runs: list[Run]) -> list[str]:
    with_eval = [r for r in runs if r.eval]
    if not with_eval:
        return []
    lines = [
        "## Held-out evaluation (`superhf eval`, eval.json)",
        "",
        "| run | reward | test reward | KL / sequence | METEOR [95% CI] | tokens | distinct-2 |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in with_eval:
        e = run.eval or {}

        def stat(entry: dict[str, Any] | None, fmt: str = "+.3f") -> str:
            if not entry or entry.get("mean") is None:
                return "n/a"
            se = entry.get("se")
            return _num(entry["mean"], fmt) + (f" ± {se:.3f}" if se is not None else "")

        meteor = e.get("meteor") or {}
        meteor_text = (
            f"{meteor['mean']:.3f} [{meteor['ci_low']:.3f}, {meteor['ci_high']:.3f}]"
            if meteor.get("mean") is not None
            else "n/a"
        )
        length = (e.get("length") or {}).get("mean_tokens")
        cells = [
            f"`{run.name}`",
            stat(e.get("reward")),
            stat(e.get("test_reward")),
            stat((e.get("kl") or {}).get("per_sequence"), ".3f"),
            meteor_text,
            _num(length, ".1f"),
            _num(e.get("distinct_2"), ".3f"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def _warnings_section(runs: list[Run]) -> list[str]:
    lines = ["## Reward-hacking warnings", ""]
    monitored = any("reward_hacking" in m for r in runs for m in r.metrics)
    fired = [(r, i, w) for r in runs for i, w in r.hacking()]
    if not monitored:
        lines.append("No run logged the reward-hacking monitor (`reward_hacking`).")
    elif not fired:
        lines.append("The monitor ran and never fired.")
    for run, iteration, warning in fired:
        lines.append(f"- `{run.name}`, iteration {iteration}: {warning}")
    return [*lines, ""]


def build_report(
    run_dirs: list[str], output_dir: str | None = None, console: Console | None = None
) -> Path:
    """Write the plots, report.md and report.html; returns report.md's path.

    `output_dir` defaults to the run folder for one run, `runs/report` for several.
    """
    console = console or make_console()
    if not run_dirs:
        raise ConfigError("RUN_DIR: give at least one run folder.")
    runs = [load_run(d) for d in run_dirs]
    names = [r.name for r in runs]
    for run in runs:  # two folders with the same name: use their paths
        if names.count(run.name) > 1:
            run.name = str(run.path)
    out = Path(output_dir) if output_dir else (runs[0].path if len(runs) == 1 else None)
    out = out or Path("runs/report")
    out.mkdir(parents=True, exist_ok=True)
    keys = label_runs(runs)

    plots = [
        ("Reward", "reward.png", lambda p: plot_reward(runs, p)),
        ("KL to the reference", "kl.png", lambda p: plot_kl(runs, p)),
        ("METEOR similarity (reward hacking)", "meteor.png", lambda p: plot_meteor(runs, p)),
        ("Reward vs. METEOR", "tradeoff.png", lambda p: plot_tradeoff(runs, p, keys)),
    ]
    lines = [
        "# SuperHF training report",
        "",
        f"{len(runs)} run(s), written by `superhf report` on "
        f"{datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}.",
        "",
        "## Runs",
        "",
        *_runs_table(runs, keys),
        "",
        "Per-iteration training rewards come from new prompts each iteration and are noisy: the "
        "table compares the means of the first and last quarter of iterations (k iterations "
        "each). `eval_*` values are from held-out prompts; `KL` is the trainer's per-token "
        "KL(p_ref || p_policy) on its training batches.",
        "",
        *_eval_table(runs),
        "## Plots",
        "",
    ]
    skipped = []
    for title, filename, plot in plots:
        reason = plot(out / filename)
        if reason is None:
            lines += [f"### {title}", "", f"![{title}]({filename})", ""]
        else:
            skipped.append(f"- {title}: skipped, {reason}.")
            (out / filename).unlink(missing_ok=True)  # no stale plot from an earlier report
    _, _, points, left_out = tradeoff_points(runs)
    if points and left_out:
        skipped.append(f"- Reward vs. METEOR: left out (no data) {', '.join(left_out)}.")
    lines += [*skipped, "", *_warnings_section(runs)]
    shared = {
        k: v
        for k, v in runs[0].config.items()
        if k not in keys and all(r.config.get(k) == v for r in runs)
    }
    if shared and len(runs) > 1:
        lines += ["## Settings shared by all runs", "", "<details><summary>show</summary>", ""]
        lines += [f"- `{k}`: `{format_value(v)}`" for k, v in shared.items()] + [
            "",
            "</details>",
            "",
        ]
    notes = [n for r in runs for n in r.notes]
    if notes:
        lines += ["## Notes", "", *[f"- {n}" for n in notes], ""]
    path = out / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    drawn = {name: out / f"{name}.png" for name in ("kl", "meteor", "tradeoff")}
    write_html_report(runs, out, keys, drawn)
    for line in skipped:
        console.print(f"[yellow]{line[2:]}[/yellow]", soft_wrap=True)
    return path
