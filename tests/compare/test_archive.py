"""A comparison's record (`superhf.compare.archive`): finished, evaluated runs without weights,
checkpoints, tokenizers or prompt texts; restored where missing, never over a file."""

from __future__ import annotations

import json
from pathlib import Path

from superhf.compare import archive
from superhf.compare.task import WEIGHTS_HASH_KEY, weights_sha256


def _write(path: Path, text: str = "{}\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _answers() -> str:
    rows = [
        {
            "prompt": "a question from the dataset",
            "completion": "an answer",
            "reward": 0.5,
            "test_reward": 0.25,
            "prompt_index": 0,
        },
        {"completion": "no prompt here", "reward": 1.0, "prompt_index": 1},
    ]
    return "".join(json.dumps(r) + "\n" for r in rows)


def _comparison(root: Path) -> Path:
    out = root / "compare-x"
    _write(out / "compare_config.json", '{"seeds": [0]}\n')
    _write(out / "results.json")
    _write(out / "data" / "eval.jsonl", '{"prompt": "the dataset"}\n')
    _write(out / "start" / "compare_eval.json")
    _write(out / "start" / "completions-start.jsonl", _answers())
    model = out / "reward_models" / "train"
    _write(model / "model.safetensors", "weights")
    _write(model / "tokenizer.json")
    _write(model / "compare_build.json", '{"settings": {"split": "first-half"}}\n')
    finished = out / "runs" / "grpo-lr0.001-b0-s0"
    for name in ("done.json", "compare_eval.json", "settings.json", "run.json"):
        _write(finished / name)
    _write(finished / "progress.jsonl", '{"step": 1}\n')
    _write(finished / "monitor.jsonl", '{"step": 1}\n')
    _write(finished / "completions-grpo.jsonl", _answers())
    _write(finished / "eval_completions.jsonl", _answers())
    _write(finished / "completions.jsonl", _answers())
    _write(finished / "eval_prompts.jsonl", '{"prompt": "the dataset"}\n')
    _write(finished / "log.txt", "log")
    _write(finished / "adapter_model.safetensors", "weights")
    _write(finished / "adapter_config.json")
    _write(finished / "tokenizer.json")
    _write(finished / "checkpoint-3" / "optimizer.pt", "state")
    _write(finished / "checkpoint-3" / "superhf_state.json")
    _write(out / "runs" / "rloo-lr0.001-b0.05-s0" / "done.json")  # finished, not evaluated
    _write(out / "runs" / "rloo-lr0.001-b0.05-s0" / "adapter_model.safetensors", "weights")
    _write(out / "runs" / "superhf-lr0.001-b0.35-s0" / "progress.jsonl")  # in flight
    return out


def test_save_keeps_finished_evaluated_runs_without_weights_or_prompt_texts(tmp_path):
    out = _comparison(tmp_path / "runs")
    archive.main(["save", str(tmp_path / "runs"), str(tmp_path / "kept")])
    kept = tmp_path / "kept" / "compare-x"
    files = {str(p.relative_to(kept)) for p in kept.rglob("*") if p.is_file()}
    run = "runs/grpo-lr0.001-b0-s0/"
    assert files == {
        "compare_config.json",
        "start/compare_eval.json",
        "start/completions-start.jsonl",
        "reward_models/train/compare_build.json",
        *(
            run + name
            for name in (
                "done.json",
                "compare_eval.json",
                "settings.json",
                "run.json",
                "progress.jsonl",
                "monitor.jsonl",
                "completions-grpo.jsonl",
                "eval_completions.jsonl",
                "adapter_config.json",
            )
        ),
    }
    rows = [json.loads(line) for line in (kept / run / "completions-grpo.jsonl").open()]
    assert all("prompt" not in row for row in rows)
    assert [r["test_reward"] for r in rows if "test_reward" in r] == [0.25]  # the rest kept
    assert [r["prompt_index"] for r in rows] == [0, 1]
    build = json.loads((kept / "reward_models/train/compare_build.json").read_text())
    assert build[WEIGHTS_HASH_KEY] == weights_sha256(out / "reward_models" / "train")
    assert build[WEIGHTS_HASH_KEY]["model.safetensors"]  # a real hash of the weights file
    assert build["settings"] == {"split": "first-half"}


def test_save_again_adds_only_new_runs_and_report_files_on_request(tmp_path, capsys):
    out = _comparison(tmp_path / "runs")
    archive.main(["save", str(tmp_path / "runs"), str(tmp_path / "kept")])
    _write(out / "runs" / "rloo-lr0.001-b0.05-s0" / "compare_eval.json")  # now evaluated
    archive.main(["save", str(tmp_path / "runs"), str(tmp_path / "kept"), "--report"])
    assert "1 new runs saved, 2 in all" in capsys.readouterr().out
    assert (tmp_path / "kept" / "compare-x" / "results.json").is_file()


def test_restore_copies_what_is_missing_and_never_overwrites(tmp_path):
    _comparison(tmp_path / "runs")
    archive.main(["save", str(tmp_path / "runs"), str(tmp_path / "kept")])
    fresh = tmp_path / "fresh"
    _write(fresh / "compare-x" / "compare_config.json", '{"seeds": [0, 1]}\n')
    archive.main(["restore", str(tmp_path / "kept"), str(fresh)])
    run = fresh / "compare-x" / "runs" / "grpo-lr0.001-b0-s0"
    assert (run / "done.json").is_file() and (run / "compare_eval.json").is_file()
    assert not (run / "adapter_model.safetensors").exists()
    assert (fresh / "compare-x" / "compare_config.json").read_text() == '{"seeds": [0, 1]}\n'
    assert not (fresh / "compare-x" / "runs" / "rloo-lr0.001-b0.05-s0").exists()
