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


def test_a_path_inside_the_comparison_compares_by_its_place_there(tmp_path):
    """A comparison moved from /old/cmp to tmp_path/cmp: its eval file and reward model keep
    their cache; a path outside the comparison, or another file inside it, does not."""
    root = tmp_path / "cmp"
    (root / "data").mkdir(parents=True)
    (root / "data" / "eval.jsonl").write_text("{}\n")
    (root / "reward_models" / "test").mkdir(parents=True)
    stored = {
        "dataset_name": "/old/place/cmp/data/eval.jsonl",
        "test_reward_model": "/old/place/cmp/reward_models/test",
        "seed": 0,
    }
    current = {
        "dataset_name": str(root / "data" / "eval.jsonl"),
        "test_reward_model": str(root / "reward_models" / "test"),
        "seed": 0,
    }
    assert same_settings(stored, current, root)
    assert not same_settings(stored, current)  # without the comparison folder: other files
    (root / "data" / "train.jsonl").write_text("{}\n")
    assert not same_settings(
        stored, {**current, "dataset_name": str(root / "data/train.jsonl")}, root
    )
    outside = tmp_path / "eval.jsonl"
    outside.write_text("{}\n")
    assert not same_settings(stored, {**current, "dataset_name": str(outside)}, root)
    assert not same_settings({**stored, "seed": 1}, current, root)
