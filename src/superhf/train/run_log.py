"""Where a run's numbers go: one console line per iteration, metrics.jsonl, completions.jsonl
(every sample, kept or not), eval_completions.jsonl (the held-out answers) and any accelerate
tracker (`report_to`). Every line is flushed as it is written, so a crash loses nothing
already logged. `open_run_log` starts a run's logs (with its held-out prompts and config.yaml);
processes other than the main one log through `SilentRunLogger`; `peak_memory_mb` is the
memory figure each iteration logs.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from superhf.files import (
    COMPLETIONS_FILE,
    CONFIG_FILE,
    EVAL_COMPLETIONS_FILE,
    EVAL_PROMPTS_FILE,
    METRICS_FILE,
    json_safe,
)

if TYPE_CHECKING:
    from accelerate import Accelerator

    from superhf.config import SuperHFConfig
    from superhf.data import Prompt
    from superhf.generation import Completion, GenerationStats
    from superhf.rewards.scoring import Scores


def mean_or_nan(values: Sequence[float]) -> float:
    """NaN for no values: metrics are floats, and NaN is logged as null (not measured)."""
    return statistics.fmean(values) if values else float("nan")


def iteration_metrics(
    iteration: int,
    completions: list[Completion],
    generation: GenerationStats,
    scores: Scores,
    kept: list[int],
    train_metrics: dict[str, float],
    times: list[float],
) -> dict[str, Any]:
    """One iteration's metrics from what its stages returned (TRL's flat names).

    `times`: the clock at the start and after sampling, scoring, fine-tuning and evaluation.
    """
    rewards = scores.total
    lengths = [c.num_tokens for c in completions]
    start, sampled, scored, tuned, evaluated = times
    return {
        "iteration": iteration,
        "reward": mean_or_nan(rewards),
        "reward_std": statistics.pstdev(rewards) if rewards else float("nan"),
        "reward_max": max(rewards, default=float("nan")),
        "reward_min": min(rewards, default=float("nan")),
        "reward_kept": mean_or_nan([rewards[i] for i in kept]),
        **{f"rewards/{name}/mean": mean_or_nan(v) for name, v in scores.per_func.items()},
        **train_metrics,
        "completions/mean_length": mean_or_nan(lengths),
        "completions/min_length": min(lengths, default=0),
        "completions/max_length": max(lengths, default=0),
        "completions/clipped_ratio": mean_or_nan([float(c.clipped) for c in completions]),
        "completions/num_empty": generation.num_empty,
        "num_completions": len(completions),
        "num_kept": len(kept),
        "tokens_per_second": (
            generation.num_sampled_tokens / generation.seconds if generation.seconds else 0.0
        ),
        "time/generate": sampled - start,
        "time/score": scored - sampled,
        "time/fine_tune": tuned - scored,
        "time/eval": evaluated - tuned,
        "step_time": evaluated - start,
    }


def completion_rows(
    iteration: int,
    prompts: list[Prompt],
    completions: list[Completion],
    scores: Scores,
    kept: list[int],
    log_all: bool = True,
) -> list[dict[str, Any]]:
    """completions.jsonl rows: prompt, text, total and each reward, kept or not, clipped or not.

    With `log_all` (`log_all_completions`), every sampled completion in sampling order (the
    samples of one prompt together); without it, only the kept ones.
    """
    chosen = set(kept)
    return [
        {
            "iteration": iteration,
            "prompt_index": completions[i].prompt_index,
            "prompt": prompts[completions[i].prompt_index].prompt,
            "completion": completions[i].text,
            "reward": scores.total[i],
            **{f"rewards/{name}": values[i] for name, values in scores.per_func.items()},
            "kept": i in chosen,
            "clipped": completions[i].clipped,
        }
        for i in (range(len(completions)) if log_all else kept)
    ]


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
    """Writes a run's logs. A new run replaces the files in output_dir; a resumed run rewrites
    the metrics its checkpoint holds and cuts each completions file back to the size the
    checkpoint recorded (`sizes`), so that the iterations run again are not logged twice.
    """

    def __init__(
        self,
        output_dir: str | Path,
        resumed_metrics: list[dict[str, Any]] | None = None,
        resume_sizes: dict[str, int] | None = None,
        trackers: Sequence[Any] = (),
    ):
        """`resume_sizes`: None for a new run; else {file name: bytes to keep}. A file the
        checkpoint did not record (one from before superhf logged it) is kept as it is.
        `trackers`: accelerate's trackers (`report_to`), whose runs `close` ends, finished or
        stopped (a process of many ends without Python's exit hooks)."""
        self.output_dir = Path(output_dir)
        self._trackers = list(trackers)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self._metrics = open(self.output_dir / METRICS_FILE, "w", encoding="utf-8")  # noqa: SIM115
        for metrics in resumed_metrics or []:
            self.log_metrics(metrics)
        self._files = {}
        for name in (COMPLETIONS_FILE, EVAL_COMPLETIONS_FILE):
            path = self.output_dir / name
            if resume_sizes is None or not path.exists():
                self._files[name] = open(path, "w", encoding="utf-8")  # noqa: SIM115
                continue
            if name in resume_sizes:
                with open(path, "r+b") as f:
                    f.truncate(min(resume_sizes[name], path.stat().st_size))
            self._files[name] = open(path, "a", encoding="utf-8")  # noqa: SIM115

    @property
    def sizes(self) -> dict[str, int]:
        """Where each completions file ends now (a checkpoint records them)."""
        return {name: f.tell() for name, f in self._files.items()}

    def write_rows(self, name: str, rows: list[dict[str, Any]]) -> None:
        """A small JSON-lines file written whole (e.g. the held-out prompts)."""
        text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        (self.output_dir / name).write_text(text, encoding="utf-8")

    def log_metrics(self, metrics: dict[str, Any]) -> None:
        line = json.dumps(json_safe(metrics))
        self._metrics.write(line + "\n")
        self._metrics.flush()

    def log_completions(self, rows: list[dict[str, Any]], name: str = COMPLETIONS_FILE) -> None:
        """Append rows to completions.jsonl (or `name`, e.g. eval_completions.jsonl), flushed."""
        f = self._files[name]
        for row in rows:
            f.write(json.dumps(json_safe(row), ensure_ascii=False) + "\n")
        f.flush()

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._metrics.close()
        for f in self._files.values():
            f.close()
        for tracker in self._trackers:
            tracker.finish()


class SilentRunLogger(RunLogger):
    """The run log of a process other than the main one: it writes nothing (the main process
    holds the same numbers and writes them once)."""

    def __init__(
        self,
        output_dir: str | Path,
        resumed_metrics: list[dict[str, Any]] | None = None,
        resume_sizes: dict[str, int] | None = None,
    ):
        self.output_dir = Path(output_dir)
        self._sizes = {COMPLETIONS_FILE: 0, EVAL_COMPLETIONS_FILE: 0, **(resume_sizes or {})}

    @property
    def sizes(self) -> dict[str, int]:
        return dict(self._sizes)

    def write_rows(self, name: str, rows: list[dict[str, Any]]) -> None:
        pass

    def log_metrics(self, metrics: dict[str, Any]) -> None:
        pass

    def log_completions(self, rows: list[dict[str, Any]], name: str = COMPLETIONS_FILE) -> None:
        pass

    def close(self) -> None:
        pass


def open_run_log(
    args: SuperHFConfig,
    accelerator: Accelerator,
    history: list[dict[str, Any]],
    resume_sizes: dict[str, int] | None,
    eval_prompts: list[Prompt],
) -> RunLogger:
    """The run's logger, with the held-out prompts and the run's settings (config.yaml, which
    `superhf train --resume` reads) written and accelerate's trackers started (the logger's
    close ends them). Only the main process writes; the others get a `SilentRunLogger` (they
    hold the same numbers)."""
    main = accelerator.is_main_process
    if main:
        accelerator.init_trackers("superhf", config=tracker_config(args))
        logger = RunLogger(args.output_dir, history, resume_sizes, accelerator.trackers)
    else:
        logger = SilentRunLogger(args.output_dir, history, resume_sizes)
    if eval_prompts:
        logger.write_rows(
            EVAL_PROMPTS_FILE, [{"prompt": p.prompt, "text": p.text} for p in eval_prompts]
        )
    if main:
        with open(Path(args.output_dir) / CONFIG_FILE, "w", encoding="utf-8") as f:
            config = {**args.to_dict(), "resume_from_checkpoint": None}
            yaml.safe_dump(config, f, sort_keys=False)
    return logger


def tracker_scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """The finite numbers of an iteration's metrics, as accelerate's trackers take them."""
    return {
        k: float(v)
        for k, v in metrics.items()
        if isinstance(v, int | float) and math.isfinite(float(v))
    }


def tracker_config(args: SuperHFConfig) -> dict[str, Any]:
    """Tracker-friendly hyperparameters (TensorBoard takes scalars and strings only)."""
    items = args.to_dict().items()
    return {k: (str(v) if isinstance(v, list) else v) for k, v in items if v is not None}


def peak_memory_mb() -> float:
    """Peak memory of this process so far: the accelerator's on CUDA, else resident (ru_maxrss)."""
    import torch  # here: the rest of this module needs no torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    try:
        import resource
    except ImportError:  # not on Unix
        return float("nan")
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
