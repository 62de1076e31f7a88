"""Time one SuperHF iteration's stages on SmolLM2-135M-Instruct (CPU), against an older commit.

    make bench                       # bench_sampling.py, then this with --baseline a67c251
    .venv/bin/python bench/bench_iteration.py --iterations 2 --baseline a67c251

The quickstart settings (`superhf train`'s defaults: 4 prompts x 8 samples x up to 48 tokens,
the default reward, LoRA r16), one warm-up iteration, then `--iterations` timed ones; the
stage times are the trainer's own (`time/generate`, `time/score`, `time/fine_tune`).

`--baseline REF` checks REF out into a `git worktree` and times the same iterations with its
code (same prompts, same seed, same machine, one after the other), then prints the ratios.
Run it alone: two torch jobs on 2 cores slow each other 5-10x.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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


def time_baseline(ref: str, iterations: int) -> dict[str, float]:
    """`time_iterations` with the code of commit `ref`, in a subprocess from a git worktree."""
    root = Path(__file__).resolve().parents[1]
    folder = Path(tempfile.mkdtemp(prefix="superhf-baseline-")) / "tree"
    subprocess.run(["git", "worktree", "add", "--detach", str(folder), ref], cwd=root, check=True)
    try:
        code = (
            f"import json, sys; sys.path.insert(0, {str(root / 'bench')!r}); "
            f"from bench_iteration import time_iterations; "
            f"print('RESULT ' + json.dumps(time_iterations({iterations})))"
        )
        env = {**os.environ, "PYTHONPATH": str(folder / "src")}
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True
        ).stdout
        return json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(folder)], cwd=root, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=2, help="Timed iterations.")
    parser.add_argument("--baseline", default=None, help="A commit to time the same way.")
    parser.add_argument("--out", default="bench/results/iteration.json")
    cli = parser.parse_args()

    result = {
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
        "torch": torch.__version__,
        "setup": "quickstart iteration: SmolLM2-135M-Instruct fp32, LoRA r16 q/k/v/o, "
        "4 prompts x 8 samples x up to 48 tokens, default reward; "
        f"mean of {cli.iterations} after one warm-up",
        "current": time_iterations(cli.iterations),
    }
    print("current: " + json.dumps(result["current"]), flush=True)
    if cli.baseline:
        result["baseline_ref"] = cli.baseline
        result["baseline"] = time_baseline(cli.baseline, cli.iterations)
        print(f"baseline {cli.baseline}: " + json.dumps(result["baseline"]), flush=True)
        result["speedup"] = {
            k: result["baseline"][k] / result["current"][k] for k in STAGES if k.startswith("time")
        }
        result["speedup"]["step_time"] = (
            result["baseline"]["step_time"] / result["current"]["step_time"]
        )
    Path(cli.out).parent.mkdir(parents=True, exist_ok=True)
    Path(cli.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
