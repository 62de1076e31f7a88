"""The comparison's evaluation cache: when a stored evaluation was made with these settings."""

from __future__ import annotations

from superhf.compare.evaluation import same_settings


def test_paths_compare_by_the_file_they_name(tmp_path, monkeypatch):
    (tmp_path / "runs" / "rm").mkdir(parents=True)
    (tmp_path / "runs" / "eval.jsonl").write_text("{}\n")
    monkeypatch.chdir(tmp_path)
    relative = {"dataset_name": "runs/eval.jsonl", "reward_funcs": ["runs/rm"], "seed": 0}
    absolute = {
        "dataset_name": str(tmp_path / "runs/eval.jsonl"),
        "reward_funcs": [str(tmp_path / "runs/rm")],
        "seed": 0,
    }
    assert same_settings(relative, absolute)
    assert not same_settings(relative, {**absolute, "seed": 1})
    assert not same_settings(relative, {**absolute, "reward_funcs": ["default"]})
    assert not same_settings(None, absolute)
