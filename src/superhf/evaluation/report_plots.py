"""The report's plots (matplotlib, loaded when a plot is drawn): reward, KL and METEOR along
each run, and reward against METEOR over runs (the paper's trade-off). report.md saves them as
PNG files, report.html (`report_curves`) inlines them.

Every curve against iterations marks where the reward-hacking monitor warned (`mark_hacking`):
a red dashed line where a streak of warnings starts, the streak shaded, a red ▼ on the top edge
at each warning, and a red ring on the point of a curve whose signal fired there.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from superhf.evaluation.report_runs import HackingWarning, Run, last_window_mean, rolling_mean

if TYPE_CHECKING:  # matplotlib loads when a plot is drawn, not for `superhf report --help`
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

HACK_COLOR = "#c62828"
"""The warnings' red (the page's --warn); the runs' colours leave tab10's red out."""
MARK_GID = "reward-hacking-warning"
"""The marks' artist ids, as an SVG's element ids: `reward-hacking-warning-7` (the line at
iteration 7), `-ticks` (the ▼s), `-fired-eval_meteor` (the rings on eval_meteor's curve)."""
SIGNAL_KEYS = {"meteor_threshold": "eval_meteor", "divergence": "eval_test_reward"}
"""The metric a monitor signal reads, where its name is not the metric's key."""
PlotTarget = Path | BinaryIO
"""Where a plot is saved: a PNG file (report.md) or a buffer (report.html inlines it)."""


# --- plots ----------------------------------------------------------------------------------


def _colors(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    palette = [cmap(i) for i in range(10) if i != 3]  # red (3) is the warnings'
    return [palette[i % len(palette)] for i in range(n)]


def warning_streaks(warnings: list[HackingWarning]) -> list[tuple[int, int]]:
    """(first, last iteration) of each streak of warnings in neighbouring metrics rows, so a
    run that warns at every iteration gets one shaded span, not a wall of lines."""
    streaks: list[tuple[int, int]] = []
    previous_row = None
    for warning in warnings:
        if streaks and previous_row is not None and warning.row == previous_row + 1:
            streaks[-1] = (streaks[-1][0], warning.iteration)
        else:
            streaks.append((warning.iteration, warning.iteration))
        previous_row = warning.row
    return streaks


def fired_on(warning: HackingWarning, key: str) -> bool:
    """Whether one of the signals that fired at `warning` reads the metric `key`."""
    return any(SIGNAL_KEYS.get(name, name) == key for name in warning.signals or [])


def mark_hacking(ax: Axes, runs: list[Run], key: str | None = None) -> list[int]:
    """Mark each iteration where a run's monitor warned; returns the iterations marked.

    A dashed line where a streak starts, the streak shaded, a ▼ on the top edge per warning;
    with `key`, the curve's point is ringed where `key`'s signal was among those that fired."""
    from matplotlib.transforms import ScaledTranslation

    top = ax.get_xaxis_transform() + ScaledTranslation(0, -4 / 72, ax.figure.dpi_scale_trans)
    marked: set[int] = set()
    for run in runs:
        warnings = run.warnings()
        if not warnings:
            continue
        for first, last in warning_streaks(warnings):
            ax.axvline(
                first, color=HACK_COLOR, linestyle="--", linewidth=1.2, alpha=0.85,
                zorder=1.5, gid=f"{MARK_GID}-{first}",
            )  # fmt: skip
            if last > first:
                ax.axvspan(
                    first, last, color=HACK_COLOR, alpha=0.08, linewidth=0,
                    gid=f"{MARK_GID}-span-{first}-{last}",
                )  # fmt: skip
        iterations = [w.iteration for w in warnings]
        ax.plot(  # just under the top edge: clear of the panel's title
            iterations, [1.0] * len(iterations), linestyle="none", marker="v", ms=6,
            color=HACK_COLOR, transform=top, clip_on=False, gid=f"{MARK_GID}-ticks",
        )  # fmt: skip
        marked.update(iterations)
        if key is None:
            continue
        values = dict(zip(*run.series(key), strict=True))
        rings = [
            (w.iteration, values[w.iteration])
            for w in warnings
            if w.iteration in values and fired_on(w, key)
        ]
        if rings:
            xs, ys = zip(*rings, strict=True)
            gid = f"{MARK_GID}-fired-{key.replace('/', '-')}"
            ax.plot(
                xs, ys, linestyle="none", marker="o", ms=11, mfc="none", mec=HACK_COLOR,
                mew=1.6, label="the signal that fired", gid=gid,
            )  # fmt: skip
    return sorted(marked)


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

        handles.append(Line2D([], [], color=HACK_COLOR, linestyle="--", marker="v", ms=6))
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
    keys = (["reward"] if has_train else []) + (["eval_test_reward"] if has_eval else [])
    hacked = [mark_hacking(ax, runs, key) for ax, key in zip(axes, keys, strict=True)]
    _finish(fig, axes, any(hacked), path)
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
    _finish(fig, [ax], bool(mark_hacking(ax, runs, key)), path)
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
