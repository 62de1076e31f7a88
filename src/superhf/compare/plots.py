"""The comparison's figures (matplotlib, Agg), from results.json's dict.

- reward_vs_tokens.png: train reward along each run against sampled tokens, one line per
  method (its reported learning rate), the mean over seeds with a +-1 standard-error band;
- test_reward_vs_tokens.png: the test reward of the in-run evaluations (the start at 0 tokens,
  then every `eval_steps` updates and the last, on the held-out prompts of the training
  split) against sampled tokens, drawn the same way;
- final_test_reward.png: the final test reward per method (mean +- standard error across
  seeds), the start policy as a line; the train reward when there is no test reward model;
- train_vs_test.png: train against test reward of every run (over-optimisation shows as
  train reward rising without test reward);
- kl_sweep.png: SuperHF's reward against METEOR similarity over its beta sweep (the paper's
  trade-off), one point per beta, with standard errors;
- frontier_kl.png: the reward-KL frontier, every finished run a point: its final test reward
  against its exact KL per token to the start (`kl_exact`), runs at their arm's chosen learning
  rate filled, the others hollow, SuperHF's betas and variants each their own arm;
- frontier_tokens.png: the same final test rewards against the sampled tokens each run spent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from superhf.compare.results import arm_key, label


def _figure() -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(7, 4.5), layout="constrained")


def _mean_se(group: dict[str, Any], key: str) -> tuple[float | None, float]:
    """Mean over seeds and its standard error (one seed: the SE over the eval prompts)."""
    stat = group.get(key) or {}
    return stat.get("mean"), stat.get("se") or stat.get("se_over_prompts") or 0.0


def _curves_vs_tokens(
    result: dict[str, Any], path: Path, key: str, ylabel: str, title: str
) -> bool:
    """`key` of each run's progress against its sampled tokens, per row: each seed faint, the
    mean over seeds with a +-1 SE band where several seeds share the row."""
    from matplotlib import colormaps

    fig = _figure()
    ax = fig.add_subplot()
    drawn = False
    palette = colormaps["tab10"]
    for index, group in enumerate(result["headline"]):
        color = palette(index % 10)  # a row's seeds and its mean in one colour
        runs = [r for r in result["runs"] if r["status"] == "done" and arm_key(r) == arm_key(group)]
        curves = []
        for r in runs:
            points = [
                (p["sampled_tokens"], p[key])
                for p in r["progress"]
                if p.get("sampled_tokens") is not None and p.get(key) is not None
            ]
            if len(points) >= 1:
                curves.append(np.array(points, dtype=float))
        if not curves:
            continue
        drawn = True
        end = min(c[-1, 0] for c in curves)
        grid = np.linspace(max(c[0, 0] for c in curves), end, 50) if end > 0 else None
        for c in curves:
            ax.plot(c[:, 0], c[:, 1], alpha=0.25, linewidth=0.8, marker=".", color=color)
        if grid is not None and len(curves) > 1:
            ys = np.array([np.interp(grid, c[:, 0], c[:, 1]) for c in curves])
            mean, se = ys.mean(0), ys.std(0, ddof=1) / np.sqrt(len(curves))
            label = f"{group['label']} ({len(curves)} seeds)"
            ax.plot(grid, mean, linewidth=2, label=label, color=color)
            ax.fill_between(grid, mean - se, mean + se, alpha=0.2, color=color)
        else:
            only = curves[0]
            ax.plot(only[:, 0], only[:, 1], linewidth=2, label=group["label"], color=color)
    if not drawn:
        return False
    ax.set_xlabel("sampled completion tokens")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=120)
    return True


def reward_vs_tokens(result: dict[str, Any], path: Path) -> bool:
    return _curves_vs_tokens(
        result,
        path,
        "train_reward",
        "train reward of the step's samples",
        "Train reward along the run (mean ± SE over seeds)",
    )


def test_reward_vs_tokens(result: dict[str, Any], path: Path) -> bool:
    return _curves_vs_tokens(
        result,
        path,
        "eval_test_reward",
        "test reward, in-run held-out prompts",
        "Test reward along the run (mean ± SE over seeds)",
    )


def final_test_reward(result: dict[str, Any], path: Path) -> bool:
    groups = result["headline"]
    key = (
        "test_reward"
        if any(_mean_se(g, "test_reward")[0] is not None for g in groups)
        else "reward"
    )
    points = [(g["label"], *_mean_se(g, key)) for g in groups if _mean_se(g, key)[0] is not None]
    if not points:
        return False
    fig = _figure()
    ax = fig.add_subplot()
    xs = np.arange(len(points))
    ax.errorbar(xs, [p[1] for p in points], yerr=[p[2] for p in points], fmt="o", capsize=4)
    start = result["start"]["numbers"].get(key)
    if start is not None:
        ax.axhline(start, color="grey", linestyle="--", label="start policy")
        ax.legend(fontsize=8)
    ax.set_xticks(xs, [p[0] for p in points], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(f"{key.replace('_', ' ')} on held-out prompts")
    ax.set_title(
        f"Final {key.replace('_', ' ')} per method (mean ± SE over seeds; one seed: over prompts)"
    )
    fig.savefig(path, dpi=120)
    return True


def train_vs_test(result: dict[str, Any], path: Path) -> bool:
    runs = [
        r
        for r in result["runs"]
        if r["numbers"]["test_reward"] is not None and r["numbers"]["reward"] is not None
    ]
    if not runs:
        return False
    fig = _figure()
    ax = fig.add_subplot()
    for name in dict.fromkeys(_label(r) for r in runs):
        mine = [r for r in runs if _label(r) == name]
        ax.scatter(
            [r["numbers"]["reward"] for r in mine],
            [r["numbers"]["test_reward"] for r in mine],
            label=name,
        )
    start = result["start"]["numbers"]
    if start.get("reward") is not None and start.get("test_reward") is not None:
        ax.scatter(
            [start["reward"]], [start["test_reward"]], marker="*", s=150, c="k", label="start"
        )
    ax.set_xlabel("train reward (held-out prompts)")
    ax.set_ylabel("test reward (held-out RM)")
    ax.set_title("Train vs test reward, every run")
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=120)
    return True


def _label(run: dict[str, Any]) -> str:
    return label(run["method"], run["beta"], run.get("variant", ""))


def kl_sweep(result: dict[str, Any], path: Path) -> bool:
    groups = sorted(
        (g for g in result["headline"] if g["method"] == "superhf" and not g.get("variant")),
        key=lambda g: g["beta"],
    )
    key = (
        "test_reward"
        if any(_mean_se(g, "test_reward")[0] is not None for g in groups)
        else "reward"
    )
    points = [
        g
        for g in groups
        if _mean_se(g, key)[0] is not None and _mean_se(g, "meteor")[0] is not None
    ]
    if len(points) < 2:
        return False
    fig = _figure()
    ax = fig.add_subplot()
    x = [_mean_se(g, "meteor") for g in points]
    y = [_mean_se(g, key) for g in points]
    ax.errorbar(
        [a for a, _ in x],
        [a for a, _ in y],
        xerr=[b for _, b in x],
        yerr=[b for _, b in y],
        fmt="o-",
        capsize=3,
    )
    for g, (mx, _), (my, _) in zip(points, x, y, strict=True):
        ax.annotate(f"β={g['beta']:g}", (mx, my), textcoords="offset points", xytext=(5, 5))
    ax.set_xlabel("METEOR similarity between answers to different prompts")
    ax.set_ylabel(key.replace("_", " "))
    ax.set_title("SuperHF's KL sweep: reward vs METEOR")
    fig.savefig(path, dpi=120)
    return True


def _frontier(result: dict[str, Any], path: Path, x_key: str, xlabel: str, title: str) -> bool:
    """Every finished run's test reward (else train reward) against `x_key` of its record."""
    from matplotlib import colormaps

    def x_of(run: dict[str, Any]) -> float | None:
        value = run["numbers"].get(x_key, run.get(x_key))
        return float(value) if isinstance(value, int | float) else None

    y_key = "test_reward" if result["start"]["numbers"].get("test_reward") is not None else "reward"
    runs = [
        r
        for r in result["runs"]
        if r["status"] == "done" and x_of(r) is not None and r["numbers"][y_key] is not None
    ]
    if not runs:
        return False
    chosen = {arm_key(g) for g in result["headline"]}
    fig = _figure()
    ax = fig.add_subplot()
    palette = colormaps["tab10"]
    for index, name in enumerate(dict.fromkeys(_label(r) for r in runs)):
        color = palette(index % 10)
        for filled in (True, False):
            mine = [r for r in runs if _label(r) == name and (arm_key(r) in chosen) == filled]
            if mine:
                ax.scatter(
                    [x_of(r) for r in mine],
                    [r["numbers"][y_key] for r in mine],
                    color=color if filled else "none",
                    edgecolors=color,
                    label=name if filled else None,
                )
    start = result["start"]["numbers"].get(y_key)
    if start is not None:
        ax.axhline(start, color="k", linestyle=":", label="start")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"final {y_key.replace('_', ' ')} (held-out prompts)")
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=120)
    return True


def frontier_kl(result: dict[str, Any], path: Path) -> bool:
    return _frontier(
        result,
        path,
        "kl_exact_per_token",
        "exact KL(policy || start) per token, own samples at T=1",
        "Reward-KL frontier: every run (filled: its arm's chosen rate)",
    )


def frontier_tokens(result: dict[str, Any], path: Path) -> bool:
    return _frontier(
        result,
        path,
        "sampled_tokens",
        "sampled completion tokens",
        "Reward against sampled tokens: every run (filled: its arm's chosen rate)",
    )


def draw_plots(result: dict[str, Any], out: Path) -> list[str]:
    """Draw what the results allow; the file names drawn."""
    drawn = []
    for name, draw in (
        ("reward_vs_tokens.png", reward_vs_tokens),
        ("test_reward_vs_tokens.png", test_reward_vs_tokens),
        ("final_test_reward.png", final_test_reward),
        ("train_vs_test.png", train_vs_test),
        ("kl_sweep.png", kl_sweep),
        ("frontier_kl.png", frontier_kl),
        ("frontier_tokens.png", frontier_tokens),
    ):
        if draw(result, out / name):
            drawn.append(name)
    return drawn
