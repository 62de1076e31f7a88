"""Time one SuperHF iteration's stages on SmolLM2-135M-Instruct (CPU), against an older commit.

    make bench                       # bench_sampling.py, then this with --baseline a67c251
    .venv/bin/python bench/bench_iteration.py --iterations 2 --baseline a67c251

The quickstart settings (`superhf train`'s defaults: 4 prompts x 8 samples x up to 48 tokens,
the default reward, LoRA r16), one warm-up iteration, then `--iterations` timed ones; the
stage times are the trainer's own (`time/generate`, `time/score`, `time/fine_tune`).

`--baseline REF` checks REF out into a `git worktree` and times the same iterations with its
code (same prompts, same seed, same machine), alternating with the current code for
`--rounds` rounds (each run a fresh process), then prints the median of the paired ratios.
Run it alone: two torch jobs on 2 cores slow each other 5-10x.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

STAGES = ["time/generate", "time/score", "time/fine_tune", "step_time", "tokens_per_second"]


def time_iterations(iterations: int) -> dict[str, float]:
    """Mean stage times of `iterations` quickstart iterations after a warm-up. Uses only APIs
    that the baseline commits have too: it runs against their code."""
    from superhf.config import SuperHFConfig
    from superhf.data import embedded_prompts, prepare_prompts
    from superhf.train.trainer import SuperHFTrainer

    config = SuperHFConfig(
        max_iterations=iterations + 1, num_eval_prompts=0, output_dir="/tmp/superhf-bench"
    )
    trainer = SuperHFTrainer(args=config)
    prompts, _ = prepare_prompts(embedded_prompts(), trainer.tokenizer, config.max_prompt_length)
    size = config.prompts_per_iteration
    timed = []
    for i in range(iterations + 1):
        metrics = trainer.step(prompts[i * size : (i + 1) * size], iteration=i + 1)
        if i > 0:  # the first iteration warms up caches and lazy model loads
            timed.append(metrics)
    stages = {k: sum(m[k] for m in timed) / len(timed) for k in STAGES}
    model = getattr(trainer, "sampling_model", None)  # commits before it sample the policy
    stages["sampling_dtype"] = str(model.dtype if model else "the policy's (float32)")
    return stages


def time_tree(src: Path, iterations: int) -> dict[str, float]:
    """`time_iterations` with the code under `src`, in a fresh subprocess."""
    root = Path(__file__).resolve().parents[1]
    code = (
        f"import json, sys; sys.path.insert(0, {str(root / 'bench')!r}); "
        f"from bench_iteration import time_iterations; "
        f"print('RESULT ' + json.dumps(time_iterations({iterations})))"
    )
    env = {**os.environ, "PYTHONPATH": str(src)}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True
    ).stdout
    return json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])


def median_of(runs: list[dict]) -> dict:
    return {k: statistics.median(r[k] for r in runs) for k in STAGES} | {
        "sampling_dtype": runs[0]["sampling_dtype"]
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=2, help="Timed iterations a run.")
    parser.add_argument("--baseline", default=None, help="A commit to time the same way.")
    parser.add_argument(
        "--rounds", type=int, default=2, help="Alternating runs of each (the host drifts)."
    )
    parser.add_argument("--out", default="bench/results/iteration.json")
    cli = parser.parse_args()

    root = Path(__file__).resolve().parents[1]
    folder = None
    if cli.baseline:
        folder = Path(tempfile.mkdtemp(prefix="superhf-baseline-")) / "tree"
        git = ["git", "worktree", "add", "--detach", str(folder), cli.baseline]
        subprocess.run(git, cwd=root, check=True)
    rounds = []
    try:
        for i in range(cli.rounds):
            pair = {"current": time_tree(root / "src", cli.iterations)}
            print(f"round {i + 1} current: " + json.dumps(pair["current"]), flush=True)
            if folder is not None:
                pair["baseline"] = time_tree(folder / "src", cli.iterations)
                print(f"round {i + 1} {cli.baseline}: " + json.dumps(pair["baseline"]), flush=True)
            rounds.append(pair)
    finally:
        if folder is not None:
            subprocess.run(["git", "worktree", "remove", "--force", str(folder)], cwd=root)
    result = {
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
        "torch": torch.__version__,
        "setup": "quickstart iteration: SmolLM2-135M-Instruct fp32, LoRA r16 q/k/v/o, "
        "4 prompts x 8 samples x up to 48 tokens, default reward; "
        f"mean of {cli.iterations} after one warm-up; median of {cli.rounds} alternating rounds",
        "rounds": rounds,
        "current": median_of([r["current"] for r in rounds]),
    }
    if folder is not None:
        result["baseline_ref"] = cli.baseline
        result["baseline"] = median_of([r["baseline"] for r in rounds])
        # each round's ratio pairs runs made minutes apart, so drift cancels more than it
        # would between medians
        timed = [k for k in STAGES if k.startswith("time")] + ["step_time"]
        paired = {k: [r["baseline"][k] / r["current"][k] for r in rounds] for k in timed}
        result["speedup"] = {k: statistics.median(v) for k, v in paired.items()}
        result["speedup_range"] = {k: [min(v), max(v)] for k, v in paired.items()}
    Path(cli.out).parent.mkdir(parents=True, exist_ok=True)
    Path(cli.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "rounds"}, indent=2))


if __name__ == "__main__":
    main()
