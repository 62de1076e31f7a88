"""A run's story in two lines: training reward early vs late, held-out reward before vs after.

The trainer prints these lines when a run ends; `superhf report` shows the same lines in
report.html, read back from metrics.jsonl (where a number that was NaN is null).
"""

from __future__ import annotations

import math
import statistics
from typing import Any


def _number(value: Any) -> float:
    """A logged value as a float; NaN for null (not measured) or anything not a number."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return math.nan


def run_summary(history: list[dict[str, Any]], num_eval_prompts: int) -> list[str]:
    """The end-of-run lines: training reward early vs late, held-out reward before vs after."""
    lines = []
    trained = [m for m in history if m.get("iteration", 0) > 0 and "reward" in m]
    if len(trained) >= 2:
        k = max(1, len(trained) // 4)
        first, last = (
            statistics.fmean(_number(m["reward"]) for m in part)
            for part in (trained[:k], trained[-k:])
        )
        lines.append(
            f"Mean reward: first {k} iterations {first:+.3f}, last {k} {last:+.3f}. Each "
            "iteration has new prompts, so compare runs on the same seed."
        )
    evals = [m for m in history if "eval_reward" in m]
    if len(evals) >= 2:
        start, end = evals[0], evals[-1]
        lines.append(
            f"Held-out prompts (the same {num_eval_prompts} each time): reward "
            f"{_number(start['eval_reward']):+.3f} at iteration {start['iteration']}, "
            f"{_number(end['eval_reward']):+.3f} at iteration {end['iteration']}; METEOR "
            f"{_number(start.get('eval_meteor')):.3f} -> {_number(end.get('eval_meteor')):.3f}."
        )
    return lines
