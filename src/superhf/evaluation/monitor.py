"""Watch a run for reward hacking while it trains (no peer does this).

Two signs, read from the metrics the trainer logs:
- divergence: over the last `window` evaluations the train reward trends up while the held-out
  test reward (`test_reward_model`, which never drives training) trends down by more than two
  standard errors of one evaluation: the policy is learning what the train reward likes and
  the test reward does not;
- mode collapse: METEOR similarity between answers to *different* held-out prompts above
  `meteor_threshold`: the policy says the same thing whatever it is asked (SUPERHF.md, 5).

The monitor is a pure function of the metrics history, so a resumed run rebuilds it by
replaying metrics.jsonl.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any


def slope(values: list[float]) -> float:
    """Least-squares slope of `values` against 0, 1, 2, ..."""
    n = len(values)
    mean_x, mean_y = (n - 1) / 2, statistics.fmean(values)
    num = sum((i - mean_x) * (v - mean_y) for i, v in enumerate(values))
    return num / sum((i - mean_x) ** 2 for i in range(n))


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


@dataclass
class RewardHackingMonitor:
    window: int = 4
    meteor_threshold: float = 0.4
    train: list[float] = field(default_factory=list)
    """Mean train reward of the iterations since the previous evaluation, per evaluation."""
    test: list[tuple[float, float]] = field(default_factory=list)
    """(test reward, its standard error) per evaluation."""
    _since_eval: list[float] = field(default_factory=list)

    def update(self, metrics: dict[str, Any]) -> str | None:
        """Feed one iteration's metrics; a warning when a sign shows at this evaluation."""
        if _finite(metrics.get("reward")):
            self._since_eval.append(metrics["reward"])
        if "eval_meteor" not in metrics and "eval_test_reward" not in metrics:
            return None
        warnings = []
        if self._since_eval:
            self.train.append(statistics.fmean(self._since_eval))
            self._since_eval = []
        if _finite(metrics.get("eval_test_reward")):
            se = metrics.get("eval_test_reward_se")
            self.test.append((metrics["eval_test_reward"], se if _finite(se) else 0.0))
            warning = self._divergence()
            if warning:
                warnings.append(warning)
        meteor = metrics.get("eval_meteor")
        if _finite(meteor) and meteor > self.meteor_threshold:
            warnings.append(
                f"METEOR similarity {meteor:.3f} > meteor_threshold {self.meteor_threshold}: "
                "answers to different prompts look alike (mode collapse)"
            )
        return "; ".join(warnings) or None

    def _divergence(self) -> str | None:
        if len(self.test) < self.window or len(self.train) < self.window:
            return None
        train = self.train[-self.window :]
        test = [t for t, _ in self.test[-self.window :]]
        noise = statistics.fmean(se for _, se in self.test[-self.window :])
        train_change = slope(train) * (self.window - 1)
        test_change = slope(test) * (self.window - 1)
        if train_change > 0 and test_change < -2 * noise:
            return (
                f"over the last {self.window} evaluations train reward rose {train_change:+.3f} "
                f"while test reward fell {test_change:+.3f} (more than 2 standard errors, "
                f"{2 * noise:.3f})"
            )
        return None
