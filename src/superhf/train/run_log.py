"""Where a run's numbers go: one console line per iteration, metrics.jsonl, completions.jsonl,
and any accelerate tracker (`report_to`). Every line is flushed as it is written, so a crash
loses nothing already logged.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from superhf.files import COMPLETIONS_FILE, METRICS_FILE, json_safe


def format_metrics(metrics: dict[str, Any], max_iterations: int) -> str:
    """The one console line a person reads per iteration."""

    def get(key: str) -> float:
        value = metrics.get(key)
        return float("nan") if value is None else float(value)

    return (
        f"iter {metrics['iteration']:>3}/{max_iterations} | "
        f"reward {get('reward'):+.3f} ± {get('reward_std'):.3f} "
        f"(kept {get('reward_kept'):+.3f}) | kl {get('kl'):.4f} | "
        f"loss {get('loss'):.3f} (sft {get('loss/sft'):.3f}, kl {get('loss/kl'):.3f}) | "
        f"len {get('completions/mean_length'):.1f} | "
        f"{get('step_time'):.1f}s (gen {get('time/generate'):.1f}, "
        f"score {get('time/score'):.1f}, tune {get('time/fine_tune'):.1f}) | "
        f"{get('tokens_per_second'):.0f} tok/s"
    )


class RunLogger:
    """Writes a run's logs. A new run replaces any metrics.jsonl in output_dir; a resumed run
    rewrites the metrics its checkpoint holds and cuts completions.jsonl back to the checkpoint.
    """

    def __init__(
        self,
        output_dir: str | Path,
        resumed_metrics: list[dict[str, Any]] | None = None,
        completions_bytes: int | None = None,
    ):
        self.output_dir = Path(output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self._metrics = open(self.output_dir / METRICS_FILE, "w", encoding="utf-8")  # noqa: SIM115
        for metrics in resumed_metrics or []:
            self.log_metrics(metrics)
        completions = self.output_dir / COMPLETIONS_FILE
        if completions_bytes is None or not completions.exists():
            self._completions = open(completions, "w", encoding="utf-8")  # noqa: SIM115
        else:
            with open(completions, "r+b") as f:
                f.truncate(min(completions_bytes, completions.stat().st_size))
            self._completions = open(completions, "a", encoding="utf-8")  # noqa: SIM115

    @property
    def completions_bytes(self) -> int:
        """Where completions.jsonl ends now (a checkpoint records it)."""
        return self._completions.tell()

    def write_rows(self, name: str, rows: list[dict[str, Any]]) -> None:
        """A small JSON-lines file written whole (e.g. the held-out prompts)."""
        text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        (self.output_dir / name).write_text(text, encoding="utf-8")

    def log_metrics(self, metrics: dict[str, Any]) -> None:
        line = json.dumps(json_safe(metrics))
        self._metrics.write(line + "\n")
        self._metrics.flush()

    def log_completions(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            self._completions.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._completions.flush()

    def close(self) -> None:
        self._metrics.close()
        self._completions.close()
