"""A comparison's record without its weights: what to commit, so that a comparison spread over
machines that do not last (sessions, spot instances, CI) loses no finished run.

    python -m superhf.compare.archive save runs results/fair       # every comparison in runs/
    python -m superhf.compare.archive restore results/fair runs    # before `superhf compare`

`save` copies, for each comparison folder (one with compare_config.json), every finished and
evaluated run (done.json and compare_eval.json), the start's evaluation and each reward
model's build record with the SHA-256 of its weights; `restore` copies them back where
missing. A restored run is never redone or re-evaluated (the harness's resume rule), and a
reward model is rebuilt from its data, then checked against the recorded hash
(`superhf.compare.task`), so new runs are scored by the reward model the old ones were.

Left out: weights, optimizer checkpoints, tokenizers, logs, the training samples
(completions.jsonl) and the prompts files; the `prompt` of every JSON line is dropped (a
dataset's text stays where it lies; answers, rewards and prompt indices are kept, which is
what the report's paired intervals read). A run not yet evaluated is left out whole: without
its weights it could not be evaluated after a restore.
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

from superhf.compare.evaluation import EVAL_RESULT_FILE
from superhf.compare.spec import DONE_FILE
from superhf.compare.task import BUILD_FILE, WEIGHTS_HASH_KEY, weights_sha256
from superhf.files import COMPLETIONS_FILE, EVAL_PROMPTS_FILE, write_text_atomic

COMPARISON_FILE = "compare_config.json"
"""What marks a comparison folder (the harness writes it first)."""
REPORT_FILES = ("results.json", "report.md")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf")
LEFT_OUT_NAMES = frozenset(
    {
        COMPLETIONS_FILE,  # every training sample with its prompt: large, and the data's text
        EVAL_PROMPTS_FILE,  # the held-out prompts themselves
        "log.txt",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "vocab.json",
        "merges.txt",
        "added_tokens.json",
        "chat_template.jinja",
    }
)
MAX_FILE_BYTES = 2_000_000
"""A larger file is left out and named: the record is meant to be small enough to commit."""


def comparisons(root: Path) -> Iterator[Path]:
    """The comparison folders directly under `root`, by name."""
    if root.is_dir():
        yield from sorted(p for p in root.iterdir() if (p / COMPARISON_FILE).is_file())


def kept(path: Path) -> bool:
    """Whether a file of a run or start folder belongs in the record."""
    return not (
        path.name in LEFT_OUT_NAMES
        or path.name.endswith(WEIGHT_SUFFIXES)
        or any(part.startswith("checkpoint") for part in path.parts)
    )


def without_prompts(text: str) -> str:
    """JSON lines with each object's `prompt` dropped (other lines as they are)."""
    lines = []
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            lines.append(line)
            continue
        if isinstance(row, dict) and "prompt" in row:
            row.pop("prompt")
            line = json.dumps(row, ensure_ascii=False)
        lines.append(line)
    return "".join(line + "\n" for line in lines)


def copy_folder(src: Path, dest: Path, left_out: list[str]) -> int:
    """The kept files of `src` into `dest` (prompts dropped from .jsonl); files copied."""
    copied = 0
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        relative = path.relative_to(src)
        if not kept(relative):
            continue
        if path.stat().st_size > MAX_FILE_BYTES:
            left_out.append(f"{path} ({path.stat().st_size} bytes)")
            continue
        target = dest / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".jsonl":
            write_text_atomic(target, without_prompts(path.read_text(encoding="utf-8")))
        else:
            shutil.copyfile(path, target)
        copied += 1
    return copied


def evaluated(folder: Path) -> bool:
    return (folder / DONE_FILE).is_file() and (folder / EVAL_RESULT_FILE).is_file()


def save_comparison(src: Path, dest: Path, report: bool = False) -> dict[str, int | list[str]]:
    """The record of one comparison folder `src` into `dest`; counts and what was left out."""
    left_out: list[str] = []
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src / COMPARISON_FILE, dest / COMPARISON_FILE)
    if report:
        for name in REPORT_FILES:
            if (src / name).is_file():
                shutil.copyfile(src / name, dest / name)
        for plot in src.glob("*.png"):
            shutil.copyfile(plot, dest / plot.name)
    start = src / "start"
    if (start / EVAL_RESULT_FILE).is_file() and not (dest / "start" / EVAL_RESULT_FILE).is_file():
        copy_folder(start, dest / "start", left_out)
    for marker in sorted(src.glob(f"reward_models/*/{BUILD_FILE}")):
        built = json.loads(marker.read_text(encoding="utf-8"))
        built.setdefault(WEIGHTS_HASH_KEY, weights_sha256(marker.parent))
        target = dest / marker.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(target, json.dumps(built, indent=2) + "\n")
    new = 0
    for run in sorted(p for p in (src / "runs").glob("*") if p.is_dir()):
        target = dest / "runs" / run.name
        if evaluated(run) and not evaluated(target):  # a finished run never changes
            copy_folder(run, target, left_out)
            new += 1
    archived = sum(evaluated(p) for p in (dest / "runs").glob("*"))
    return {"new_runs": new, "runs": archived, "left_out": left_out}


def restore_comparison(src: Path, dest: Path) -> int:
    """Copy the record `src` into the comparison folder `dest`, never over a file there;
    files copied."""
    copied = 0
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        target = dest / path.relative_to(src)
        if target.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        copied += 1
    return copied


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m superhf.compare.archive",
        description="Save every comparison's finished runs without their weights (to commit), "
        "or restore them into a runs folder before resuming.",
    )
    parser.add_argument("action", choices=["save", "restore"])
    parser.add_argument("source", type=Path, help="save: the runs root; restore: the record")
    parser.add_argument("target", type=Path, help="save: the record; restore: the runs root")
    parser.add_argument(
        "--report", action="store_true", help="save results.json, report.md and the plots too"
    )
    args = parser.parse_args(argv)
    for folder in comparisons(args.source):
        target = args.target / folder.name
        if args.action == "save":
            counts = save_comparison(folder, target, report=args.report)
            print(f"{folder.name}: {counts['new_runs']} new runs saved, {counts['runs']} in all")
            for item in counts["left_out"]:
                print(f"  left out, too large: {item}")
        else:
            print(f"{folder.name}: {restore_comparison(folder, target)} files restored")


if __name__ == "__main__":
    main()
