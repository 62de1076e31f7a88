"""What the monitor costs a run: the held-out evaluation that feeds it, per iteration, as a
share of an iteration, and the training samples' signals (replayed from completions.jsonl).

    python bench/reward_hacking/cost.py RUN_DIR [--eval_steps 10]

Read from the run's own timings (metrics.jsonl: `time/eval` on evaluation iterations,
`step_time` without it elsewhere), so both sides of the ratio ran on the same machine at the
same time. Time a run alone on the machine for a figure to report.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

from superhf.data import Prompt  # noqa: E402
from superhf.evaluation.signals import text_signals  # noqa: E402
from superhf.generation import Completion  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("--eval_steps", type=int, default=10, help="superhf train's default")
    args = parser.parse_args()
    folder = Path(args.run_dir)
    rows = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
    trained = [r for r in rows if r["iteration"] > 0]
    evals = [r["time/eval"] for r in trained if "eval_reward" in r or "eval_meteor" in r]
    plain = [r["step_time"] for r in trained if not ("eval_reward" in r or "eval_meteor" in r)]
    eval_s, step_s = statistics.median(evals), statistics.median(plain)
    share = eval_s / args.eval_steps / step_s

    by_iteration: dict[int, list[dict]] = {}
    for line in (folder / "completions.jsonl").read_text().splitlines():
        row = json.loads(line)
        by_iteration.setdefault(row["iteration"], []).append(row)
    text_signals([Prompt("a", "a"), Prompt("b", "b")], [Completion(0, "x y", 2, False)] * 2)
    seconds = []
    for samples in by_iteration.values():
        index: dict[str, int] = {}
        for s in samples:
            index.setdefault(json.dumps(s["prompt"]), len(index))
        prompts = [Prompt(json.loads(p), "") for p in index]
        completions = [
            Completion(
                index[json.dumps(s["prompt"])], s["completion"], len(s["completion"].split()), False
            )
            for s in samples
        ]
        t0 = time.perf_counter()
        text_signals(prompts, completions, meteor_pairs=100)
        seconds.append(time.perf_counter() - t0)
    signals_s = statistics.median(seconds)
    print(f"run: {folder}")
    print(f"iteration without evaluation: median {step_s:.2f} s over {len(plain)}")
    print(
        f"one evaluation (held-out answers, scored, signals): median {eval_s:.2f} s "
        f"over {len(evals)}"
    )
    print(
        f"the evaluation every {args.eval_steps} iterations: {eval_s / args.eval_steps:.2f} s "
        f"per iteration = {share:.1%} of an iteration"
    )
    print(
        f"training samples' signals: median {signals_s * 1000:.0f} ms per iteration = "
        f"{signals_s / step_s:.1%}"
    )


if __name__ == "__main__":
    main()
