"""The task every method shares: training prompts, held-out eval prompts, SFT pairs, rewards.

`prepare_task(cfg)` writes, once, into `output_dir`:
- `data/train.jsonl`: the training rows (HH transcripts keep `chosen`, the first human turn is
  the prompt), `data/eval.jsonl`: the held-out rows, with every prompt that also occurs in
  training dropped (no method trains on an eval prompt), `data/sft.jsonl`: prompt and chosen
  answer pairs for the SFT baseline;
- `reward_models/train`, `reward_models/test`: built with `superhf reward train` from the
  configured preference pairs when asked (cached: a folder built with the same settings is
  reused, one built with other settings stops the comparison).
Derived files go to the run folder only; the preference data itself is read where it lies.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from superhf.compare.config import HALF_SPLITS, CompareConfig
from superhf.data import (
    HH_ASSISTANT,
    HH_HUMAN,
    first_human_turn,
    load_prompt_dataset,
    question_text,
)
from superhf.errors import ConfigError, DatasetError
from superhf.files import json_safe, write_text_atomic

BUILD_FILE = "compare_build.json"
"""Written into a reward model folder the comparison built: its settings, build time and the
SHA-256 of its weights."""
WEIGHTS_HASH_KEY = "weights_sha256"


@dataclass
class Task:
    train_file: str
    eval_file: str
    sft_file: str | None
    """None when the training rows hold no chosen answers (SFT is then skipped)."""
    reward_funcs: list[str]
    reward_weights: list[float] | None
    test_reward_model: str | None
    info: dict[str, Any] = field(default_factory=dict)
    """Counts, sources and reward-model build times, for results.json."""


def read_split(name: str, split: str) -> list[dict[str, Any]]:
    """Rows of a dataset split; `first-half` / `second-half` are halves of its rows in order."""
    if split in HALF_SPLITS or split == "all":
        from superhf.rewards.training import split_rows

        rows = load_prompt_dataset(name, None, "all" if name.startswith("embedded:") else "train")
        rows = rows.to_list()
        picked, _ = split_rows(len(rows), split)
        return [rows[i] for i in picked]
    return load_prompt_dataset(name, None, split).to_list()


def prompt_key(row: dict[str, Any]) -> str | None:
    """What a row asks, to match prompts across splits and formats: the question of its
    `prompt` (a string, an HH-form prompt, a conversation's last user turn) or of its HH
    transcript's first human turn."""
    if row.get("prompt") is not None:
        return question_text(row["prompt"]).strip() or None
    chosen = row.get("chosen")
    return first_human_turn(chosen) if isinstance(chosen, str) else None


def chosen_answer(row: dict[str, Any]) -> tuple[str, str] | None:
    """(prompt as the policy sees it, the chosen first answer) of an HH or TRL pair row."""
    chosen = row.get("chosen")
    if isinstance(row.get("prompt"), str) and isinstance(chosen, str):
        return row["prompt"], chosen
    if not isinstance(chosen, str):
        return None
    question = first_human_turn(chosen)
    start = chosen.find(HH_ASSISTANT)
    if question is None or start < 0:
        return None
    answer = chosen[start + len(HH_ASSISTANT) :].split(HH_HUMAN)[0].rstrip()
    if not answer.strip():
        return None
    return f"{HH_HUMAN} {question}{HH_ASSISTANT}", answer


def _write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = (json.dumps(json_safe(row), ensure_ascii=False) + "\n" for row in rows)
    write_text_atomic(path, "".join(lines))


def prepare_prompts(cfg: CompareConfig, out: Path) -> dict[str, Any]:
    """Write data/train.jsonl, data/eval.jsonl and data/sft.jsonl; return their counts."""
    train = read_split(cfg.dataset_name, cfg.dataset_train_split)
    held_out = read_split(cfg.dataset_name, cfg.eval_split)
    train_keys = {prompt_key(r) for r in train} - {None}
    eval_rows, seen, overlap = [], set(), 0
    for row in held_out:
        key = prompt_key(row)
        if key is None or key in seen:
            continue
        if key in train_keys:
            overlap += 1
            continue
        seen.add(key)
        eval_rows.append(row)
    if len(eval_rows) < 2:
        raise DatasetError(
            f"eval_split {cfg.eval_split!r} of {cfg.dataset_name!r} leaves {len(eval_rows)} "
            "prompts not in the training split: pick another eval_split."
        )
    eval_rows = eval_rows[: cfg.num_eval_prompts]
    _write_rows(out / "data" / "train.jsonl", train)
    _write_rows(out / "data" / "eval.jsonl", eval_rows)
    sft_rows = train
    if cfg.sft_dataset_name is not None:
        sft_rows = read_split(cfg.sft_dataset_name, cfg.sft_dataset_split)
    eval_keys = {prompt_key(r) for r in eval_rows}
    pairs = [
        p
        for p in map(chosen_answer, sft_rows)
        if p is not None and question_text(p[0]).strip() not in eval_keys
    ]
    sft_file = out / "data" / "sft.jsonl"
    if pairs:
        _write_rows(sft_file, [{"prompt": p, "answer": a} for p, a in pairs])
    else:
        sft_file.unlink(missing_ok=True)
    return {
        "num_train_rows": len(train),
        "num_eval_prompts": len(eval_rows),
        "num_eval_dropped_as_in_training": overlap,
        "num_sft_pairs": len(pairs),
    }


def weights_sha256(folder: Path) -> dict[str, str]:
    """SHA-256 of each weights file (.safetensors, .bin) of a model folder, by name."""
    hashes = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix in (".safetensors", ".bin"):
            digest = hashlib.sha256()
            with path.open("rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
            hashes[path.name] = digest.hexdigest()
    return hashes


def build_reward_model(
    data: str, split: str, settings: dict[str, Any], folder: Path, console: Console
) -> dict[str, Any]:
    """`superhf reward train` on `data`'s `split` into `folder`, unless it is already there.

    A build record without its weights (a comparison restored from its record,
    `superhf.compare.archive`) is rebuilt, and the new weights must hash as the recorded ones:
    the finished runs were scored by those."""
    from superhf.rewards.training import RewardTrainingConfig, train_reward_model

    wanted = {**settings, "dataset_name": data, "split": split}
    marker = folder / BUILD_FILE
    recorded = None
    if marker.is_file():
        built = json.loads(marker.read_text(encoding="utf-8"))
        if built["settings"] != wanted:
            raise ConfigError(
                f"{folder} was built with other settings ({built['settings']}) than asked "
                f"({wanted}): remove the folder or use another output_dir."
            )
        if weights_sha256(folder):
            return {**built, "reused": True}
        recorded = built.get(WEIGHTS_HASH_KEY)
        marker.unlink()
    config = RewardTrainingConfig(**{**wanted, "output_dir": str(folder)})
    console.print(f"Building the reward model {folder} from {data} ({split}) ...")
    start = time.perf_counter()
    metrics = train_reward_model(config, console=console)
    hashes = weights_sha256(folder)
    if recorded and hashes != recorded:
        raise ConfigError(
            f"{folder} was rebuilt from its data, but its weights differ from those its record "
            f"names ({recorded} against {hashes}): the finished runs were scored by the "
            "recorded ones. Rebuild on the machine and versions that built them, or start "
            "the comparison in a new output_dir."
        )
    built = {
        "settings": wanted,
        "seconds": time.perf_counter() - start,
        "metrics": metrics,
        WEIGHTS_HASH_KEY: hashes,
    }
    marker.write_text(json.dumps(json_safe(built), indent=2) + "\n", encoding="utf-8")
    return {**built, "reused": False, "rebuilt_from_record": bool(recorded)}


def prepare_task(cfg: CompareConfig, console: Console) -> Task:
    out = Path(cfg.output_dir)
    info: dict[str, Any] = prepare_prompts(cfg, out)
    reward_funcs, weights, test_model = list(cfg.reward_funcs), cfg.reward_weights, None
    test_model = cfg.test_reward_model
    builds = {}
    if cfg.train_reward_model_data is not None:
        folder = out / "reward_models" / "train"
        builds["train"] = build_reward_model(
            cfg.train_reward_model_data,
            cfg.train_reward_model_split,
            cfg.reward_model_settings,
            folder,
            console,
        )
        reward_funcs, weights = [str(folder)], None
    if cfg.test_reward_model_data is not None:
        folder = out / "reward_models" / "test"
        builds["test"] = build_reward_model(
            cfg.test_reward_model_data,
            cfg.test_reward_model_split,
            cfg.reward_model_settings,
            folder,
            console,
        )
        test_model = str(folder)
    info["reward_model_builds"] = builds
    sft = out / "data" / "sft.jsonl"
    return Task(
        train_file=str(out / "data" / "train.jsonl"),
        eval_file=str(out / "data" / "eval.jsonl"),
        sft_file=str(sft) if sft.is_file() else None,
        reward_funcs=reward_funcs,
        reward_weights=weights,
        test_reward_model=test_model,
        info=info,
    )
