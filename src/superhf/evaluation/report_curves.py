"""The curves of report.html, as PNG data URIs: one self-contained file, no plotting library
in the browser.

    curves(runs, sweep_keys)  ->  [Curve(title, caption, data_uri or None, skipped reason)]

Train reward with its spread, held-out train and test reward with standard errors, each reward
component, KL, METEOR with its 95% interval, the monitor's diversity and drift signals, length
and clipped share, seconds per stage, and (several runs) reward against METEOR. Runs are
overlaid, one colour each; where the reward-hacking monitor warned, every curve against
iterations is marked (`report_plots.mark_hacking`: red dashed line, ▼, a ring on the signal
that fired). report.md's plots (report_plots.py) are drawn by the same helpers.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from superhf.evaluation.report_plots import (
    PlotTarget,
    _colors,
    _finish,
    mark_hacking,
    plot_kl,
    plot_meteor,
    plot_tradeoff,
)
from superhf.evaluation.report_runs import Run

if TYPE_CHECKING:
    from matplotlib.axes import Axes

STAGES = [
    ("time/generate", "generate"),
    ("time/score", "score"),
    ("time/fine_tune", "fine-tune"),
    ("time/eval", "held-out evaluation"),
]
DIVERSITY = [
    ("eval_distinct_2", "held-out: distinct-2"),
    ("eval_entropy", "held-out: next-token entropy"),
    ("eval_template_share", "held-out: share opening alike"),
    ("eval_kl", "held-out: KL to the start / token"),
    ("completions/meteor", "training: METEOR similarity"),
    ("completions/distinct_2", "training: distinct-2"),
    ("completions/template_share", "training: share opening alike"),
]
"""The monitor's signals that no other figure draws (monitor.SIGNALS), one panel each."""
MARKS_SHOWN = 12
"""Warned iterations a caption lists before it says how many more."""


@dataclass
class Curve:
    """One figure of the page."""

    title: str
    caption: str
    data_uri: str | None
    """`data:image/png;base64,...`; None when skipped."""
    skipped: str | None = None
    """Why it was not drawn (no run logged its metrics)."""


def _band(ax: Axes, run: Run, key: str, spread_key: str, color: Any) -> None:
    """Shade `key` ± `spread_key` where both were logged."""
    spread = dict(zip(*run.series(spread_key), strict=True))
    both = [(x, y, spread[x]) for x, y in zip(*run.series(key), strict=True) if x in spread]
    if both:
        xs, lows, highs = zip(*[(x, y - s, y + s) for x, y, s in both], strict=True)
        ax.fill_between(xs, lows, highs, color=color, alpha=0.15, linewidth=0)


def plot_train_reward(runs: list[Run], target: PlotTarget) -> str | None:
    """Mean reward of the sampled completions ± one standard deviation, and the kept mean."""
    if not any(r.series("reward")[0] for r in runs):
        return "no run logged `reward`"
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.2))
    ax = fig.subplots()
    for run, color in zip(runs, _colors(len(runs)), strict=True):
        xs, ys = run.series("reward")
        _band(ax, run, "reward", "reward_std", color)
        ax.plot(xs, ys, color=color, marker="o" if len(xs) <= 30 else None, ms=3, label=run.label)
        kept = run.series("reward_kept")
        ax.plot(*kept, color=color, linestyle="--", linewidth=1)
    ax.plot([], [], color="grey", linestyle="--", linewidth=1, label="kept (trained on)")
    ax.set_title("Train reward of the sampled completions (band: ± 1 std)")
    ax.set_xlabel("iteration")
    ax.set_ylabel("reward")
    _finish(fig, [ax], bool(mark_hacking(ax, runs, "reward")), target)
    return None


def plot_heldout_reward(runs: list[Run], target: PlotTarget) -> str | None:
    """The same held-out prompts at each evaluation: train reward and test reward ± SE."""
    keys = [("eval_reward", "-", "o", "train reward"), ("eval_test_reward", "--", "s", "test RM")]
    if not any(r.series(k)[0] for r in runs for k, *_ in keys):
        return "no run logged `eval_reward` or `eval_test_reward`"
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.2))
    ax = fig.subplots()
    for run, color in zip(runs, _colors(len(runs)), strict=True):
        for key, style, marker, _ in keys:
            xs, ys = run.series(key)
            if xs:
                se = dict(zip(*run.series(f"{key}_se"), strict=True))
                err = [se.get(x, 0.0) for x in xs]
                ax.errorbar(xs, ys, yerr=err, fmt=style, marker=marker, color=color, capsize=3)
        ax.plot([], [], color=color, linewidth=2, label=run.label)
    for key, style, marker, what in keys:
        if any(r.series(key)[0] for r in runs):
            ax.plot([], [], style, color="grey", marker=marker, label=what)
    ax.set_title("Held-out prompts: reward at each evaluation (bars: ± 1 SE)")
    ax.set_xlabel("iteration (0: the starting policy)")
    ax.set_ylabel("mean reward")
    _finish(fig, [ax], bool(mark_hacking(ax, runs, "eval_test_reward")), target)
    return None


def _small_multiples(
    runs: list[Run], panels: list[tuple[str, str]], title: str, ylabel: str, target: PlotTarget
) -> str | None:
    """One panel per metric key (its title given), every run overlaid in each."""
    logged = [(k, t) for k, t in panels if any(r.series(k)[0] for r in runs)]
    if not logged:
        return "no run logged " + ", ".join(f"`{k}`" for k, _ in panels)
    panels = logged
    from matplotlib.figure import Figure

    columns = min(len(panels), 2 if len(panels) <= 4 else 3)
    rows = -(-len(panels) // columns)
    fig = Figure(figsize=(8.5, 2.9 * rows + 0.7))  # the page's column width, whatever the count
    axes = list(fig.subplots(rows, columns, squeeze=False).flat)
    for ax, (key, panel_title) in zip(axes, panels, strict=False):
        for run, color in zip(runs, _colors(len(runs)), strict=True):
            xs, ys = run.series(key)
            ax.plot(xs, ys, color=color, marker="o" if len(xs) <= 30 else None, ms=2.5, lw=1.2)
        ax.set_title(panel_title, fontsize=10)
        ax.set_xlabel("iteration", fontsize=8)
        ax.tick_params(labelsize=8)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    axes = axes[: len(panels)]
    axes[0].set_ylabel(ylabel, fontsize=9)
    for run, color in zip(runs, _colors(len(runs)), strict=True):
        axes[0].plot([], [], color=color, label=run.label)
    fig.suptitle(title)
    hacked = [mark_hacking(ax, runs, key) for ax, (key, _) in zip(axes, panels, strict=True)]
    _finish(fig, axes, any(hacked), target)
    return None


def plot_components(runs: list[Run], target: PlotTarget) -> str | None:
    names = []
    for run in runs:
        for m in run.metrics:
            names += [k for k in m if k.startswith("rewards/") and k.endswith("/mean")]
    panels = [(k, k.removeprefix("rewards/").removesuffix("/mean")) for k in dict.fromkeys(names)]
    if not panels:
        return "no run logged per-function rewards (`rewards/<name>/mean`)"
    return _small_multiples(
        runs, panels, "Each reward function's mean (unweighted)", "mean", target
    )


def plot_length(runs: list[Run], target: PlotTarget) -> str | None:
    panels = [
        ("completions/mean_length", "training: mean tokens"),
        ("completions/clipped_ratio", "training: share clipped"),
        ("eval_mean_length", "held-out: mean tokens"),
        ("eval_clipped_ratio", "held-out: share clipped"),
    ]
    return _small_multiples(
        runs, panels, "Length, and the share cut off at max_completion_length", "", target
    )


def plot_diversity(runs: list[Run], target: PlotTarget) -> str | None:
    """The monitor's diversity and drift signals, where a hacking policy's answers converge."""
    return _small_multiples(
        runs, DIVERSITY, "Diversity and drift (the reward-hacking monitor's signals)", "", target
    )


def plot_stage_times(runs: list[Run], target: PlotTarget) -> str | None:
    return _small_multiples(
        runs, STAGES + [("step_time", "whole iteration")], "Seconds per iteration, by stage",
        "seconds", target,
    )  # fmt: skip


def _png(
    draw: Callable[[PlotTarget], str | None], drawn: Path | None
) -> tuple[str | None, str | None]:
    """(data URI, None) or (None, why it was skipped); `drawn`: the same PNG, already a file."""
    if drawn is not None and drawn.is_file():
        png = drawn.read_bytes()
    else:
        buffer = io.BytesIO()
        reason = draw(buffer)
        if reason is not None:
            return None, reason
        png = buffer.getvalue()
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii"), None


def curves(
    runs: list[Run], sweep_keys: list[str], drawn: dict[str, Path] | None = None
) -> list[Curve]:
    """Every figure of the page, in reading order (skipped ones say why).

    `drawn`: PNG files report.md already has ({"kl", "meteor", "tradeoff"}: path), inlined
    as they are instead of being drawn again; a missing file means that plot was skipped.
    """
    drawn = drawn or {}
    figures: list[tuple[str, str, str, Callable[[PlotTarget], str | None]]] = [
        (
            "train_reward",
            "Train reward",
            "Each iteration samples new prompts, so the line is noisy; the band is the spread "
            "over that iteration's samples, the dashed line the kept (trained-on) samples' mean.",
            lambda t: plot_train_reward(runs, t),
        ),
        (
            "heldout_reward",
            "Held-out reward",
            "The same held-out prompts at every evaluation, answered at temperature 0.7: their "
            "train reward and, with a test reward model, its score of the same answers.",
            lambda t: plot_heldout_reward(runs, t),
        ),
        (
            "components",
            "Reward components",
            "What moved the total: each reward function on the training samples.",
            lambda t: plot_components(runs, t),
        ),
        (
            "kl",
            "KL to the reference",
            "Mean per-token KL(p_ref || p_policy) on the training batches.",
            lambda t: plot_kl(runs, t),
        ),
        (
            "meteor",
            "METEOR similarity",
            "Between held-out answers to different prompts; high means the same answer to "
            "everything (mode collapse). Band: bootstrap 95% interval over prompts.",
            lambda t: plot_meteor(runs, t),
        ),
        (
            "diversity",
            "Diversity and drift",
            "The monitor's other signals on the held-out answers and the training samples: "
            "distinct-2, entropy and the share of answers opening alike fall, and the KL to the "
            "start grows, when the policy says one thing to every prompt.",
            lambda t: plot_diversity(runs, t),
        ),
        (
            "length",
            "Length and clipped share",
            "Tokens per completion, and the share that hit max_completion_length.",
            lambda t: plot_length(runs, t),
        ),
        (
            "stage_times",
            "Step time by stage",
            "Wall-clock seconds of each stage of an iteration.",
            lambda t: plot_stage_times(runs, t),
        ),
    ]
    if len(runs) > 1:
        figures.append(
            (
                "tradeoff",
                "Reward vs. METEOR",
                "One point per run, as the paper plots its KL sweep.",
                lambda t: plot_tradeoff(runs, t, sweep_keys),
            )
        )
    marks = marks_caption(runs)
    out = []
    for key, title, caption, draw in figures:
        uri, reason = _png(draw, drawn.get(key))
        out.append(Curve(title, caption + (marks if key != "tradeoff" else ""), uri, reason))
    return out


def marks_caption(runs: list[Run]) -> str:
    """The captions' key to the warning marks, naming the iterations; empty with no warning."""
    iterations = sorted({w.iteration for r in runs for w in r.warnings()})
    if not iterations:
        return ""
    named = ", ".join(map(str, iterations[:MARKS_SHOWN]))
    if len(iterations) > MARKS_SHOWN:
        named += f" and {len(iterations) - MARKS_SHOWN} more"
    return (
        f" Red dashed line and ▼: the reward-hacking monitor warned (iteration"
        f"{'s' if len(iterations) > 1 else ''} {named}); a red ring: the signal that fired, on "
        "its curve."
    )
