"""Where each SuperHF arm sits against GRPO's, RLOO's and PPO's reward-KL frontiers.

A method's frontier is the upper envelope of its points in (exact KL per token to the start,
final test reward), a point being one (method, beta, learning rate) group's mean over its
seeds, every swept rate and beta included: at a KL x, the best test reward any of its points
reached with a KL of at most x. A SuperHF arm (at its chosen rate) sits *above* a method's
frontier when it beats every point of that method that moved the policy no further, *below*
when one of them beats it. These are point estimates: the best of many noisy points favours the
method with more of them, and the intervals are the claims' (`intervals.py`).
"""

from __future__ import annotations

from typing import Any

from superhf.compare.config import is_superhf_default

FRONTIER_METHODS = ("grpo", "rloo", "ppo")
"""The RL methods SuperHF is placed against."""


def _mean(group: dict[str, Any], key: str) -> float | None:
    stat = group.get(key)
    value = stat.get("mean") if isinstance(stat, dict) else None
    return float(value) if isinstance(value, int | float) else None


def _point(group: dict[str, Any]) -> dict[str, Any] | None:
    kl, reward = _mean(group, "kl_exact_per_token"), _mean(group, "test_reward")
    if kl is None or reward is None:
        return None
    return {
        "label": group["label"],
        "learning_rate": group["learning_rate"],
        "seeds": len(group.get("seeds") or []),
        "kl": kl,
        "test_reward": reward,
        "distinct_2": _mean(group, "distinct_2"),
    }


def positions(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For every SuperHF arm at its chosen rate and every RL method with points: the method's
    best point at the arm's KL or lower, the gap (arm minus it) and "above" / "below"; "left"
    when every point of the method moved the policy further than the arm (no point to read)."""
    frontier: dict[str, list[dict[str, Any]]] = {}
    for g in groups:
        if g["method"] in FRONTIER_METHODS and (p := _point(g)) is not None:
            frontier.setdefault(g["method"], []).append(p)
    out = []
    for g in groups:
        if g["method"] != "superhf" or not g.get("chosen_learning_rate"):
            continue
        ours = _point(g)
        if ours is None:
            continue
        for method, points in frontier.items():
            reachable = [p for p in points if p["kl"] <= ours["kl"]]
            best = max(reachable, key=lambda p: p["test_reward"]) if reachable else None
            gap = ours["test_reward"] - best["test_reward"] if best else None
            out.append(
                {
                    "arm": ours,
                    "default": is_superhf_default(g),
                    "method": method,
                    "frontier_point": best,
                    "gap": gap,
                    "position": "left" if gap is None else ("above" if gap > 0 else "below"),
                }
            )
    return out


def summary(rows: list[dict[str, Any]]) -> list[str]:
    """Sentences: where the default sits against each method's frontier and, where below it,
    which SuperHF options reach it and their distinct-2 beside the default's."""
    lines = []
    for row in rows:
        if not row["default"]:
            continue
        arm, method, best = row["arm"], row["method"].upper(), row["frontier_point"]
        if best is None:
            lines.append(
                f"SuperHF's default (exact KL {arm['kl']:.4f}) moved the policy less than every "
                f"{method} point: no {method} point to read it against."
            )
            continue
        lines.append(
            f"SuperHF's default ({arm['label']}, lr {arm['learning_rate']:g}: test reward "
            f"{arm['test_reward']:+.3f} at an exact KL of {arm['kl']:.4f} per token) sits "
            f"**{row['position']}** {method}'s frontier by {row['gap']:+.3f} ({method}'s best at "
            f"that KL or lower: {best['label']}, lr {best['learning_rate']:g}, "
            f"{best['test_reward']:+.3f} at {best['kl']:.4f})."
        )
        if row["position"] == "below":
            reach = [
                r
                for r in rows
                if r["method"] == row["method"] and not r["default"] and r["position"] == "above"
            ]
            if not reach:
                lines.append(f"None of SuperHF's other arms reaches {method}'s frontier.")
            for r in reach:
                d2, d2_default = r["arm"]["distinct_2"], arm["distinct_2"]
                cost = (
                    f"distinct-2 {d2:.3f} against the default's {d2_default:.3f}"
                    if d2 is not None and d2_default is not None
                    else "distinct-2 not measured"
                )
                lines.append(
                    f"{r['arm']['label']} reaches it ({r['gap']:+.3f} at an exact KL of "
                    f"{r['arm']['kl']:.4f}; {cost})."
                )
    return lines
