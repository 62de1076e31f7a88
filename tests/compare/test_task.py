"""The comparison's reward models (`superhf.compare.task.build_reward_model`): built once,
reused, and rebuilt from a saved record (`superhf.compare.archive`) only to the same weights."""

from __future__ import annotations

import json

import pytest

from superhf.compare.task import BUILD_FILE, WEIGHTS_HASH_KEY, build_reward_model, weights_sha256
from superhf.console import make_console
from superhf.errors import ConfigError


def _pairs(path):
    rows = [
        {
            "chosen": f"\n\nHuman: How do I fix thing {i}?\n\nAssistant: Check part {i} first.",
            "rejected": f"\n\nHuman: How do I fix thing {i}?\n\nAssistant: No.",
        }
        for i in range(24)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def test_a_reward_model_rebuilt_from_its_record_must_hash_as_recorded(tmp_path):
    """Built once; its weights removed (as a restored record has none) it is rebuilt, and on
    this machine the rebuild is the same to the bit; a record naming other weights stops."""
    data, folder = _pairs(tmp_path / "pairs.jsonl"), tmp_path / "rm"
    settings = {"per_device_train_batch_size": 8, "max_length": 64}
    console = make_console(stderr=True)
    first = build_reward_model(data, "first-half", settings, folder, console)
    hashes = weights_sha256(folder)
    assert first["reused"] is False and first[WEIGHTS_HASH_KEY] == hashes and hashes
    assert build_reward_model(data, "first-half", settings, folder, console)["reused"] is True

    for name in hashes:  # a restored record: the build file without the weights
        (folder / name).unlink()
    again = build_reward_model(data, "first-half", settings, folder, console)
    assert again["rebuilt_from_record"] is True and weights_sha256(folder) == hashes

    record = json.loads((folder / BUILD_FILE).read_text())
    record[WEIGHTS_HASH_KEY] = {name: "0" * 64 for name in hashes}
    (folder / BUILD_FILE).write_text(json.dumps(record))
    for name in hashes:
        (folder / name).unlink()
    with pytest.raises(ConfigError, match="weights differ from those its record names"):
        build_reward_model(data, "first-half", settings, folder, console)
