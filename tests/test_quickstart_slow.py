"""Slow: two iterations of the embedded quickstart on the real SmolLM2-135M-Instruct."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_two_quickstart_iterations_write_every_output(tmp_path):
    out = tmp_path / "run"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "superhf.cli",
            "train",
            "--config",
            str(ROOT / "configs" / "quickstart.yaml"),
            "--max_iterations",
            "2",
            "--prompts_per_iteration",
            "2",
            "--num_generations",
            "4",
            "--max_completion_length",
            "24",
            "--output_dir",
            str(out),
            "--report_to",
            "tensorboard",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "iter   2/2" in result.stdout
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["iteration"] for m in metrics] == [0, 1, 2]  # 0: the starting policy, evaluated
    metrics = metrics[1:]
    for name in (
        "relevance",
        "toxicity_penalty",
        "repetition_penalty",
        "unfinished_penalty",
        "harmlessness",
    ):
        assert f"rewards/{name}/mean" in metrics[0]
    assert all(m["num_completions"] > 0 and m["tokens_per_second"] > 0 for m in metrics)
    rows = [json.loads(line) for line in (out / "completions.jsonl").read_text().splitlines()]
    kept = [r for r in rows if r["kept"]]  # every sample is logged, the kept ones flagged
    assert len(rows) == sum(m["num_completions"] for m in metrics)
    assert len(kept) == 4 and all(k["completion"].strip() for k in kept)
    assert (out / "config.yaml").is_file() and list(out.rglob("events.out.tfevents*"))

    from peft import AutoPeftModelForCausalLM
    from transformers import AutoTokenizer

    model = AutoPeftModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    ids = tokenizer("Hello", return_tensors="pt")
    assert (
        model.generate(**ids, max_new_tokens=3, do_sample=False).shape[1]
        > ids["input_ids"].shape[1]
    )
