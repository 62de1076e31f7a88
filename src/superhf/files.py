"""What superhf reads and writes on disk: run-folder file names, JSON lines, JSON-safe values,
and whether a name is a local path (rather than a hub id).

One reader of JSON lines serves prompts, answers to judge, MMLU questions and metrics: it
names the line at fault, or, where a torn line is expected (a killed run's last metrics
line), skips it and says which.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from superhf.errors import DatasetError

# --- a run folder (`superhf train --output_dir`) ---------------------------------------------
CONFIG_FILE = "config.yaml"
"""The run's settings; `superhf train --resume` and `superhf eval RUN_DIR` read them."""
METRICS_FILE = "metrics.jsonl"
"""One line of metrics per iteration (iteration 0: the starting policy's evaluation)."""
COMPLETIONS_FILE = "completions.jsonl"
"""Every sampled completion with its scores and a `kept` flag (only the kept ones when
`log_all_completions` is off)."""
EVAL_COMPLETIONS_FILE = "eval_completions.jsonl"
"""The held-out prompts' answers at each training-time evaluation (iteration 0: the start)."""
MONITOR_FILE = "monitor.jsonl"
"""The rows `RewardHackingCallback` writes for a transformers/TRL run: metrics.jsonl's keys."""
PROGRESS_FILE = "progress.jsonl"
"""One line per update of a `superhf compare` baseline run (best-of-n, SFT, GRPO, RLOO, PPO)."""
EVAL_PROMPTS_FILE = "eval_prompts.jsonl"
"""The held-out prompts of training-time evaluation."""
EVAL_FILE = "eval.json"
"""`superhf eval`'s results (in its --output_dir, which may be a run folder)."""

LOCAL_DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet", ".jsonl.gz", ".json.gz")


def is_local_path(name: str) -> bool:
    """True when `name` means a file or folder here, not a hub id: it exists, starts with
    `.`, `/` or `~`, or ends like a data file."""
    return (
        name.startswith((".", "/", "~"))
        or name.endswith(LOCAL_DATA_SUFFIXES)
        or Path(name).expanduser().exists()
    )


def json_safe(value: Any) -> Any:
    """`value` with every NaN and infinity (in dicts, lists, tuples) as None: JSON has no NaN,
    and null reads as "not measured"."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def temporary_beside(path: Path) -> Path:
    """A temporary name next to `path`, this process's and thread's own: two writers of one
    file (comparisons sharing a folder) never write into or rename each other's temporary."""
    return path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write `text` to `path` whole or not at all (a temporary beside it, renamed into place):
    a reader, or a run killed mid-write, never leaves half a file."""
    path = Path(path)
    tmp = temporary_beside(path)
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def read_text(path: str | Path, setting: str) -> str:
    """A UTF-8 text file (gzip when it ends in .gz); a byte that is not UTF-8 is named by line."""
    path = Path(path)
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise DatasetError(
            f"{setting}: line {line} of {str(path)!r} is not valid UTF-8 (byte "
            f"{raw[err.start]:#04x}); save the file as UTF-8."
        ) from None


@dataclass
class JSONLine:
    """One non-blank line of a JSON-lines file."""

    number: int
    """1-based line number in the file."""
    value: Any
    """The parsed object; None when the line is not usable (see `problem`)."""
    problem: str | None = None
    """Why the line is not usable, e.g. "line 3 of 'a.jsonl' is not valid JSON (...)"."""


def read_json_lines(text: str, source: str, setting: str, skip_bad: bool = False) -> list[JSONLine]:
    """Every non-blank line of `text` (the contents of `source`) as a JSON object.

    A line that is not valid JSON, or not an object of column: value, raises a DatasetError
    that names `setting`, the line and the file; with `skip_bad` it is returned with value
    None and its `problem` instead (for files whose last line a crash may have torn).
    """
    lines: list[JSONLine] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"line {number} of {source!r}"
        try:
            value = json.loads(line)
        except json.JSONDecodeError as err:
            problem = f"{where} is not valid JSON ({err.msg}, column {err.colno})"
        else:
            if isinstance(value, dict):
                lines.append(JSONLine(number, value))
                continue
            problem = (
                f"{where} is a JSON {type(value).__name__}; each line must be an object of "
                "column: value"
            )
        if not skip_bad:
            raise DatasetError(f"{setting}: {problem}.")
        lines.append(JSONLine(number, None, problem))
    return lines
