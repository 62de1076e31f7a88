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
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import yaml
from rich.console import Console

from superhf.console import make_console
from superhf.errors import ConfigError
from superhf.files import CONFIG_FILE, EVAL_FILE, METRICS_FILE, read_json_lines, read_text
from superhf.settings import check_types, config_field, parse_config_args

if TYPE_CHECKING:  # matplotlib loads when a plot is drawn, not for `superhf report --help`
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

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
HACK_COLOR = "#d62728"
PlotTarget = Path | BinaryIO
"""Where a plot is saved: a PNG file (report.md) or a buffer (report.html inlines it)."""


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
    if not (folder / METRICS_FILE).is_file():
        raise ConfigError(
            f"RUN_DIR: {str(path)!r} has no {METRICS_FILE}; give the output_dir of `superhf train`."
        )
    notes: list[str] = []
    metrics = _read_metrics(folder / METRICS_FILE, notes)
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


def _fmt_value(value: Any) -> str:
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
        parts = [f"{k}={_fmt_value(run.config.get(k))}" for k in keys[:3]]
        run.label = ", ".join(parts) or run.name
    if len({r.label for r in runs}) < len(runs):  # labels that clash: add the folder name
        for run in runs:
            run.label = f"{run.name} ({run.label})" if run.label != run.name else run.name
    return keys


# --- plots ----------------------------------------------------------------------------------


def _colors(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]


def _mark_hacking(ax: Axes, runs: list[Run]) -> bool:
    marked = False
    for run in runs:
        for iteration, _ in run.hacking():
            ax.axvline(iteration, color=HACK_COLOR, linestyle=":", linewidth=1.2, alpha=0.8)
            marked = True
    return marked


def _finish(
    fig: Figure, axes: list[Axes], hacked: bool, path: PlotTarget, iterations: bool = True
) -> None:
    """Legend below the plots (never over the data), grid, whole-number iterations, save."""
    from matplotlib.ticker import MaxNLocator

    entries: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            entries.setdefault(label, handle)
    handles, labels = list(entries.values()), list(entries)
    if hacked:
        from matplotlib.lines import Line2D

        handles.append(Line2D([], [], color=HACK_COLOR, linestyle=":", label="reward-hacking"))
        labels.append("reward-hacking warning")
    for ax in axes:
        ax.grid(alpha=0.3)
        if iterations:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if handles:
        fig.legend(
            handles,
            labels,
            loc="upper center",
            bbox_to_anchor=(0.5, 0.0),
            ncol=min(3, len(labels)),
            frameon=False,
        )
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")


def plot_reward(runs: list[Run], path: PlotTarget) -> str | None:
    """Train reward (raw + rolling mean) and held-out eval rewards; None, or why it was skipped."""
    has_train = any(r.series("reward")[0] for r in runs)
    has_eval = any(r.series(k)[0] for r in runs for k in ("eval_reward", "eval_test_reward"))
    if not has_train and not has_eval:
        return "no run logged `reward` or `eval_reward`/`eval_test_reward`"
    panels = int(has_train) + int(has_eval)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.2 * panels, 4.2))
    axes = list(fig.subplots(1, panels, squeeze=False)[0])
    colors = _colors(len(runs))
    if has_train:
        ax = axes[0]
        for run, color in zip(runs, colors, strict=True):
            xs, ys = run.series("reward")
            if not xs:
                continue
            size = max(1, min(25, len(ys) // 5))
            ax.plot(xs, ys, color=color, alpha=0.25, linewidth=0.8)
            ax.plot(xs, rolling_mean(ys, size), color=color, linewidth=2, label=run.label)
        ax.set_title("Train reward per iteration (faint) and rolling mean")
        ax.set_xlabel("iteration")
        ax.set_ylabel("mean reward of sampled completions")
    if has_eval:
        ax = axes[-1]
        for run, color in zip(runs, colors, strict=True):
            for key, style, marker, what in (
                ("eval_reward", "-", "o", "train RM"),
                ("eval_test_reward", "--", "s", "test RM"),
            ):
                xs, ys = run.series(key)
                if xs:
                    ax.plot(xs, ys, style, color=color, marker=marker, markersize=4)
                    ax.plot([], [], style, color="grey", marker=marker, label=what)
            ax.plot([], [], color=color, linewidth=2, label=run.label)
        ax.set_title("Held-out prompts: reward during training")
        ax.set_xlabel("iteration")
        ax.set_ylabel("mean reward")
    hacked = any([_mark_hacking(ax, runs) for ax in axes])
    _finish(fig, axes, hacked, path)
    return None


def _plot_series(
    runs: list[Run],
    key: str,
    title: str,
    ylabel: str,
    path: PlotTarget,
    band: tuple[str, str] | None,
) -> str | None:
    if not any(r.series(key)[0] for r in runs):
        return f"no run logged `{key}`"
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.2))
    ax = fig.subplots()
    for run, color in zip(runs, _colors(len(runs)), strict=True):
        xs, ys = run.series(key)
        if not xs:
            continue
        ax.plot(xs, ys, color=color, marker="o" if len(xs) <= 30 else None, ms=3, label=run.label)
        if band is not None:
            low = dict(zip(*run.series(band[0]), strict=True))
            high = dict(zip(*run.series(band[1]), strict=True))
            both = [x for x in xs if x in low and x in high]
            if both:
                ax.fill_between(
                    both, [low[x] for x in both], [high[x] for x in both], color=color, alpha=0.2
                )
    ax.set_title(title)
    ax.set_xlabel("iteration")
    ax.set_ylabel(ylabel)
    _finish(fig, [ax], _mark_hacking(ax, runs), path)
    return None


def plot_kl(runs: list[Run], path: PlotTarget) -> str | None:
    return _plot_series(
        runs,
        "kl",
        "KL to the reference (training batches)",
        "mean per-token KL(p_ref || p_policy)",
        path,
        None,
    )


def plot_meteor(runs: list[Run], path: PlotTarget) -> str | None:
    return _plot_series(
        runs,
        "eval_meteor",
        "METEOR similarity between answers to different prompts (band: 95% CI)",
        "METEOR (higher = more alike)",
        path,
        ("eval_meteor_ci_low", "eval_meteor_ci_high"),
    )


@dataclass
class TradeoffPoint:
    run: Run
    reward: float
    reward_se: float | None
    meteor: float
    meteor_ci: tuple[float, float] | None


def _eval_json(run: Run, key: str) -> dict[str, Any] | None:
    entry = (run.eval or {}).get(key)
    return entry if isinstance(entry, dict) and entry.get("mean") is not None else None


def _reward_sources() -> list[tuple[str, Any]]:
    def from_eval_json(key: str) -> Any:
        def get(run: Run) -> tuple[float, float | None] | None:
            entry = _eval_json(run, key)
            return (entry["mean"], entry.get("se")) if entry else None

        return get

    def last_window(key: str) -> Any:
        def get(run: Run) -> tuple[float, float | None] | None:
            values = run.series(key)[1]
            return (last_window_mean(values), None) if values else None

        return get

    return [
        ("test reward (superhf eval)", from_eval_json("test_reward")),
        ("test reward (held-out, last quarter of evals)", last_window("eval_test_reward")),
        ("train-RM reward on held-out prompts (superhf eval)", from_eval_json("reward")),
        ("train-RM reward on held-out prompts (last quarter)", last_window("eval_reward")),
        ("train reward (last quarter of iterations)", last_window("reward")),
    ]


def _meteor_sources() -> list[tuple[str, Any]]:
    def from_eval_json(run: Run) -> tuple[float, tuple[float, float] | None] | None:
        entry = _eval_json(run, "meteor")
        return (entry["mean"], (entry["ci_low"], entry["ci_high"])) if entry else None

    def last_logged(run: Run) -> tuple[float, tuple[float, float] | None] | None:
        xs, ys = run.series("eval_meteor")
        if not xs:
            return None
        low = dict(zip(*run.series("eval_meteor_ci_low"), strict=True)).get(xs[-1])
        high = dict(zip(*run.series("eval_meteor_ci_high"), strict=True)).get(xs[-1])
        return ys[-1], (low, high) if low is not None and high is not None else None

    return [
        ("METEOR similarity (superhf eval)", from_eval_json),
        ("METEOR similarity (last held-out eval)", last_logged),
    ]


def _best_source(runs: list[Run], sources: list[tuple[str, Any]]) -> tuple[str, Any] | None:
    """The source that covers the most runs; earlier (better) sources win ties."""
    counts = [sum(get(r) is not None for r in runs) for _, get in sources]
    if not counts or max(counts) == 0:
        return None
    return sources[counts.index(max(counts))]


def tradeoff_points(
    runs: list[Run],
) -> tuple[str, str, list[TradeoffPoint], list[str]]:
    """(reward label, METEOR label, one point per run that has both, names of runs left out)."""
    reward_source = _best_source(runs, _reward_sources())
    meteor_source = _best_source(runs, _meteor_sources())
    if reward_source is None or meteor_source is None:
        return "", "", [], [r.name for r in runs]
    points, left_out = [], []
    for run in runs:
        reward, meteor = reward_source[1](run), meteor_source[1](run)
        if reward is None or meteor is None:
            left_out.append(run.name)
            continue
        points.append(TradeoffPoint(run, reward[0], reward[1], meteor[0], meteor[1]))
    return reward_source[0], meteor_source[0], points, left_out


def plot_tradeoff(runs: list[Run], path: PlotTarget, sweep_keys: list[str]) -> str | None:
    """Reward against METEOR similarity, one labelled point per run (the paper's KL sweep)."""
    reward_label, meteor_label, points, left_out = tradeoff_points(runs)
    if not points:
        return "no run has both a reward and a METEOR similarity"
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 4.8))
    ax = fig.subplots()
    colors = _colors(len(runs))
    numeric = len(sweep_keys) == 1 and all(
        isinstance(p.run.config.get(sweep_keys[0]), int | float) for p in points
    )
    if numeric and len(points) > 1:  # a sweep over one number: join the points in its order
        ordered = sorted(points, key=lambda p: p.run.config[sweep_keys[0]])
        ax.plot([p.meteor for p in ordered], [p.reward for p in ordered], color="grey", lw=0.8)
    hacked = False
    for p in points:
        color = colors[runs.index(p.run)]
        xerr = None
        if p.meteor_ci is not None:
            xerr = [[max(0.0, p.meteor - p.meteor_ci[0])], [max(0.0, p.meteor_ci[1] - p.meteor)]]
        ax.errorbar(
            p.meteor, p.reward, xerr=xerr, yerr=p.reward_se, fmt="o", color=color, capsize=3, ms=7
        )
        if p.run.hacking():
            hacked = True
            ax.plot(p.meteor, p.reward, "o", ms=14, mfc="none", mec=HACK_COLOR, mew=1.5)
        ax.annotate(
            p.run.label, (p.meteor, p.reward), textcoords="offset points", xytext=(7, 6), fontsize=9
        )
    ax.margins(x=0.25, y=0.2)
    ax.set_xlabel(f"{meteor_label}  (higher = more alike: reward hacking)")
    ax.set_ylabel(reward_label)
    title = "Reward vs. METEOR similarity, one point per run"
    ax.set_title(title + (f"\n(left out, no data: {', '.join(left_out)})" if left_out else ""))
    if hacked:
        ax.plot([], [], "o", ms=10, mfc="none", mec=HACK_COLOR, label="run with reward-hacking")
    _finish(fig, [ax], False, path, iterations=False)
    return None


# --- the report -----------------------------------------------------------------------------


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
            *[_fmt_value(run.config.get(k, "n/a")) for k in settings],
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
        lines += [f"- `{k}`: `{_fmt_value(v)}`" for k, v in shared.items()] + ["", "</details>", ""]
    notes = [n for r in runs for n in r.notes]
    if notes:
        lines += ["## Notes", "", *[f"- {n}" for n in notes], ""]
    path = out / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    # report_html builds on this module (runs, plots), so it is imported here, not above.
    from superhf.evaluation.report_html import write_html_report

    drawn = {name: out / f"{name}.png" for name in ("kl", "meteor", "tradeoff")}
    write_html_report(runs, out, keys, drawn)
    for line in skipped:
        console.print(f"[yellow]{line[2:]}[/yellow]", soft_wrap=True)
    return path
