"""MMLU calibration: does the model's confidence match how often it is right?

The paper (docs/METHOD.md) measures it with MMLU 5-shot: a softmax over the next-token logits
of the four answer letters, then ALL FOUR choice probabilities of every question are binned
(N x 4 values; a value is a hit when its choice is the answer), 10 equal-width probability
bins, and the metric is the mean squared error between each non-empty bin's hit rate and the
bin's centre. That is how the reference code computed the paper's numbers (SuperHF
(Instruct) 0.0050 vs RLHF 0.0102 vs Instruct 0.0081), so `calibration_mse` is that metric.

Beside it, the usual top-1 view: the predicted letter's probability as the confidence,
`top1_ece` (the standard expected calibration error, bins weighed by size) and
`top1_calibration_mse` (the paper's formula on top-1 bins). Top-1 confidence is never below
0.25, so its two lowest bins are always empty; the two views are not comparable.

    questions = load_questions("cais/mmlu", "all", "test")       # or a local .jsonl/.csv/...
    fewshot = load_questions("cais/mmlu", "all", "dev")
    result = evaluate_calibration(model, tokenizer, questions, fewshot)
    reliability_diagram([result], "reliability.png")
"""

from __future__ import annotations

import functools
import json
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from tqdm.auto import tqdm

from superhf.errors import ConfigError, DatasetError
from superhf.files import is_local_path, json_safe, read_json_lines, read_text
from superhf.settings import check_types, config_field, parse_config_args

if TYPE_CHECKING:  # torch and transformers load with a model, not for `calibrate --help`
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

LETTERS = ("A", "B", "C", "D")
NUM_BINS = 10


# --- questions ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Question:
    """One MMLU question: four choices, the index of the right one, an optional subject."""

    question: str
    choices: tuple[str, str, str, str]
    answer: int
    subject: str | None = None


@dataclass
class QuestionSet:
    """Usable questions of a source, and how many rows were skipped (with the first reason)."""

    questions: list[Question]
    num_skipped: int = 0
    first_problem: str | None = None
    source: str = "questions"

    def __len__(self) -> int:
        return len(self.questions)


def parse_question(row: Mapping[str, Any]) -> Question:
    """A row in MMLU's schema as a Question; ValueError naming the field when it is not.

    Fields: `question` (str), `choices` (4 strings; or columns `A`..`D`, as MMLU's CSVs),
    `answer` (0-3, or a letter A-D), optional `subject`.
    """
    if not isinstance(row, Mapping):
        raise ValueError("not a JSON object")
    question = row.get("question")
    if not isinstance(question, str) or not question.strip():
        raise ValueError("`question` is missing or not a non-empty string")
    choices = row.get("choices")
    if choices is None and all(letter in row for letter in LETTERS):
        choices = [row[letter] for letter in LETTERS]
    if not isinstance(choices, list | tuple):
        raise ValueError("`choices` is missing or not a list")
    if len(choices) != 4 or not all(isinstance(c, str) for c in choices):
        raise ValueError(f"`choices` must be 4 strings, got {len(choices)} items")
    answer = row.get("answer")
    if isinstance(answer, str) and answer.strip().upper() in LETTERS:
        answer = LETTERS.index(answer.strip().upper())
    elif isinstance(answer, str) and answer.strip() in {"0", "1", "2", "3"}:
        answer = int(answer.strip())
    if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer <= 3:
        raise ValueError(f"`answer` must be 0-3 or A-D, got {answer!r}")
    subject = row.get("subject")
    return Question(
        question=question,
        choices=tuple(choices),  # type: ignore[arg-type]
        answer=answer,
        subject=subject if isinstance(subject, str) and subject else None,
    )


def parse_questions(rows: Sequence[Mapping[str, Any]], source: str = "questions") -> QuestionSet:
    """Every usable row; bad rows are skipped and counted. DatasetError when none is usable."""
    questions: list[Question] = []
    first_problem: str | None = None
    for number, row in enumerate(rows, start=1):
        try:
            questions.append(parse_question(row))
        except ValueError as err:
            first_problem = first_problem or f"row {number}: {err}"
    skipped = len(rows) - len(questions)
    if not questions:
        raise DatasetError(
            f"{source}: no usable MMLU question in {len(rows)} rows "
            f"({first_problem or 'the file is empty'}). Each row needs `question` (str), "
            "`choices` (4 strings) and `answer` (0-3 or A-D)."
        )
    return QuestionSet(questions, skipped, first_problem, source)


def _read_json_rows(path: Path) -> list[Any] | None:
    """Rows of a local .jsonl/.json(.gz) file, read line by line so that one bad row (or a
    column whose type varies, which Arrow refuses) is skipped and counted, not fatal.
    None for other sources."""
    suffixes = path.suffixes[-2:] if path.suffix == ".gz" else path.suffixes[-1:]
    kind = suffixes[0] if suffixes else ""
    if kind not in (".jsonl", ".json"):
        return None
    if not path.is_file():
        raise DatasetError(f"dataset: no such file {str(path)!r}.")
    try:
        text = read_text(path, "dataset")
    except OSError as err:
        raise DatasetError(f"dataset: cannot read {str(path)!r}: {err}") from err
    if kind == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise DatasetError(f"dataset: {str(path)!r} is not valid JSON: {err}") from err
        if not isinstance(data, list):
            raise DatasetError(f"dataset: {str(path)!r} must hold a JSON list of questions.")
        return data
    # A bad line is None here: parse_questions counts it as a skipped row.
    return [line.value for line in read_json_lines(text, str(path), "dataset", skip_bad=True)]


def load_questions(
    name: str,
    config: str | None = None,
    split: str = "test",
    limit: int | None = None,
    seed: int = 0,
) -> QuestionSet:
    """Questions from the hub (e.g. `cais/mmlu`, config `all`) or a local file.

    `limit` keeps a random sample of that many (seeded, in the source's order), so a
    quick run still spans subjects (MMLU's `all` is sorted by subject).
    """
    source = name if config is None else f"{name} ({config}, {split})"
    rows = _read_json_rows(Path(name))
    if rows is None:
        from superhf.data import load_any_dataset

        try:
            rows = load_any_dataset(name, config, split).to_list()
        except DatasetError:
            raise
        except Exception as err:  # the hub raises many types (offline, no such config, ...)
            raise DatasetError(f"dataset {source!r}: cannot load it: {err}") from err
    result = parse_questions(rows, source)
    if limit is not None and limit < len(result.questions):
        keep = sorted(random.Random(seed).sample(range(len(result.questions)), limit))
        result.questions = [result.questions[i] for i in keep]
    return result


# --- prompts -----------------------------------------------------------------------------


def _subject_text(subject: str | None) -> str:
    return f" about {subject.replace('_', ' ')}" if subject else ""


def format_question(question: Question, with_answer: bool) -> str:
    """`{question}\\nA. ..\\nB. ..\\nC. ..\\nD. ..\\nAnswer:` (plus ` X\\n\\n` for a shot)."""
    lines = [question.question.strip()]
    lines += [
        f"{letter}. {choice}" for letter, choice in zip(LETTERS, question.choices, strict=True)
    ]
    text = "\n".join(lines) + "\nAnswer:"
    return (text + f" {LETTERS[question.answer]}\n\n") if with_answer else text


def select_shots(question: Question, pool: Sequence[Question], num_fewshot: int) -> list[Question]:
    """Up to `num_fewshot` examples: same subject first, then others, in pool order.

    The question itself (same text and choices) is never one of its own shots, so the
    other questions of a file can serve as the few-shot pool.
    """
    if num_fewshot <= 0:
        return []
    others = [
        q for q in pool if not (q.question == question.question and q.choices == question.choices)
    ]
    same = [q for q in others if question.subject and q.subject == question.subject]
    rest = [q for q in others if not (question.subject and q.subject == question.subject)]
    return (same + rest)[:num_fewshot]


def build_prompt(question: Question, shots: Sequence[Question]) -> str:
    """MMLU's few-shot prompt, the format of the original paper and lm-eval-harness."""
    header = (
        "The following are multiple choice questions (with answers)"
        f"{_subject_text(question.subject)}.\n\n"
    )
    return (
        header + "".join(format_question(s, True) for s in shots) + format_question(question, False)
    )


def letter_token_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Token ids of the answer letters as they follow "Answer:".

    " A" when it is one token (most BPE tokenizers, SmolLM2 included), else "A" (tokenizers
    that split the space off).
    """
    ids: list[int] = []
    for letter in LETTERS:
        spaced = tokenizer.encode(f" {letter}", add_special_tokens=False)
        bare = tokenizer.encode(letter, add_special_tokens=False)
        if len(spaced) == 1:
            ids.append(spaced[0])
        elif len(bare) == 1:
            ids.append(bare[0])
        else:
            raise ValueError(f"the tokenizer has no single token for the letter {letter!r}")
    if len(set(ids)) != 4:
        raise ValueError(f"the answer letters map to repeated token ids {ids}")
    return ids


# --- metrics -----------------------------------------------------------------------------


def _bin_index(confidences: np.ndarray, num_bins: int) -> np.ndarray:
    """Bin b holds [b/num_bins, (b+1)/num_bins); a confidence of exactly 1 goes in the last."""
    return np.clip((confidences * num_bins).astype(int), 0, num_bins - 1)


def calibration_bins(
    confidences: Sequence[float], correct: Sequence[bool], num_bins: int = NUM_BINS
) -> list[dict[str, Any]]:
    """Per equal-width bin: edges, centre, count, accuracy and mean confidence (None if empty)."""
    conf = np.asarray(confidences, dtype=float)
    hits = np.asarray(correct, dtype=float)
    if conf.shape != hits.shape:
        raise ValueError(f"{conf.size} confidences for {hits.size} correctness values")
    if conf.size and (conf.min() < 0 or conf.max() > 1):
        raise ValueError("confidences must lie in [0, 1]")
    index = _bin_index(conf, num_bins)
    bins = []
    for b in range(num_bins):
        mask = index == b
        count = int(mask.sum())
        bins.append(
            {
                "lower": b / num_bins,
                "upper": (b + 1) / num_bins,
                "centre": (b + 0.5) / num_bins,
                "count": count,
                "accuracy": float(hits[mask].mean()) if count else None,
                "confidence": float(conf[mask].mean()) if count else None,
            }
        )
    return bins


def calibration_mse(
    confidences: Sequence[float], correct: Sequence[bool], num_bins: int = NUM_BINS
) -> float:
    """Mean over NON-EMPTY bins of (bin accuracy - bin centre)^2, the paper's formula.

    Bins are equal-width over [0, 1]; each bin counts once whatever its size, and it is
    compared with its centre (not with the mean confidence inside it). NaN with no data.
    The paper applies it to all four choices' probabilities (`all_choices_calibration_mse`).
    """
    return _mse_of_bins(calibration_bins(confidences, correct, num_bins))


def expected_calibration_error(
    confidences: Sequence[float], correct: Sequence[bool], num_bins: int = NUM_BINS
) -> float:
    """Standard ECE: sum over bins of (n_b / N) * |accuracy_b - mean confidence_b|."""
    bins = calibration_bins(confidences, correct, num_bins)
    total = sum(b["count"] for b in bins)
    if total == 0:
        return math.nan
    return float(
        sum(b["count"] / total * abs(b["accuracy"] - b["confidence"]) for b in bins if b["count"])
    )


def all_choices_bins(
    probabilities: Sequence[Sequence[float]] | np.ndarray,
    answers: Sequence[int] | np.ndarray,
    num_bins: int = NUM_BINS,
) -> list[dict[str, Any]]:
    """Bins of every choice's probability (N x 4 values); a value is a hit when its choice is
    the question's answer. The binning of the paper's calibration metric."""
    probs = np.asarray(probabilities, dtype=float).reshape(-1, 4)
    truth = np.asarray(answers, dtype=int).reshape(-1)
    if probs.shape[0] != truth.size:
        raise ValueError(f"{probs.shape[0]} probability rows for {truth.size} answers")
    hits = np.arange(4)[None, :] == truth[:, None]
    return calibration_bins(probs.ravel(), hits.ravel(), num_bins)


def all_choices_calibration_mse(
    probabilities: Sequence[Sequence[float]] | np.ndarray,
    answers: Sequence[int] | np.ndarray,
    num_bins: int = NUM_BINS,
) -> float:
    """The paper's MMLU calibration metric: `calibration_mse` over all four choices' bins."""
    return _mse_of_bins(all_choices_bins(probabilities, answers, num_bins))


def _mse_of_bins(bins: Sequence[Mapping[str, Any]]) -> float:
    used = [b for b in bins if b["count"]]
    if not used:
        return math.nan
    return float(np.mean([(b["accuracy"] - b["centre"]) ** 2 for b in used]))


@dataclass
class CalibrationResult:
    accuracy: float
    calibration_mse: float
    """The paper's metric over all four choices (see `all_choices_calibration_mse`)."""
    top1_ece: float
    """Standard ECE of the predicted letter's probability (see `expected_calibration_error`)."""
    num_questions: int
    num_skipped: int
    """Rows of the question source that were not usable."""
    bins: list[dict[str, Any]]
    """The all-choices bins behind `calibration_mse` (hit rate = `accuracy` of a bin)."""
    top1_bins: list[dict[str, Any]] = field(default_factory=list)
    """Bins of the predicted letter's probability, behind `top1_ece`."""
    top1_calibration_mse: float = math.nan
    """The paper's formula on the top-1 bins (not comparable with the paper's numbers)."""
    label: str = "model"
    num_fewshot: int = 5
    probabilities: list[list[float]] = field(default_factory=list, repr=False)
    """Per question: P(A), P(B), P(C), P(D) (softmax over the four letter logits)."""
    answers: list[int] = field(default_factory=list, repr=False)

    @property
    def ece(self) -> float:
        """The former name of `top1_ece`."""
        return self.top1_ece

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (NaN -> None); the per-question probabilities are left out.

        `ece` repeats `top1_ece` under its former name.
        """

        return json_safe(
            {
                "label": self.label,
                "accuracy": self.accuracy,
                "calibration_mse": self.calibration_mse,
                "top1_ece": self.top1_ece,
                "top1_calibration_mse": self.top1_calibration_mse,
                "ece": self.top1_ece,
                "num_questions": self.num_questions,
                "num_skipped": self.num_skipped,
                "num_fewshot": self.num_fewshot,
                "bins": self.bins,
                "top1_bins": self.top1_bins,
            }
        )


def result_from_probabilities(
    probabilities: Sequence[Sequence[float]],
    answers: Sequence[int],
    num_skipped: int = 0,
    label: str = "model",
    num_fewshot: int = 5,
    num_bins: int = NUM_BINS,
) -> CalibrationResult:
    """Accuracy, the paper's calibration MSE, top-1 ECE and both bin sets from per-question
    letter probabilities."""
    probs = np.asarray(probabilities, dtype=float).reshape(-1, 4)
    truth = np.asarray(answers, dtype=int)
    predicted = probs.argmax(axis=1)
    confidence = probs.max(axis=1)
    correct = predicted == truth
    choice_bins = all_choices_bins(probs, truth, num_bins)
    top1_bins = calibration_bins(confidence, correct, num_bins)
    return CalibrationResult(
        accuracy=float(correct.mean()) if len(truth) else math.nan,
        calibration_mse=_mse_of_bins(choice_bins),
        top1_ece=expected_calibration_error(confidence, correct, num_bins),
        num_questions=len(truth),
        num_skipped=num_skipped,
        bins=choice_bins,
        top1_bins=top1_bins,
        top1_calibration_mse=_mse_of_bins(top1_bins),
        label=label,
        num_fewshot=num_fewshot,
        probabilities=probs.tolist(),
        answers=truth.tolist(),
    )


# --- the model ---------------------------------------------------------------------------


def _fit_prompt(
    question: Question,
    pool: Sequence[Question],
    num_fewshot: int,
    tokenizer: PreTrainedTokenizerBase,
    max_length: int | None,
) -> list[int]:
    """Token ids of the prompt; shots are dropped one by one while it is longer than the model
    accepts (then the left end is cut, as lm-eval-harness does)."""
    shots = select_shots(question, pool, num_fewshot)
    while True:
        ids = tokenizer.encode(build_prompt(question, shots), add_special_tokens=True)
        if max_length is None or len(ids) <= max_length:
            return ids
        if not shots:
            return ids[-max_length:]
        shots = shots[:-1]


def _no_grad(function: Callable[..., Any]) -> Callable[..., Any]:
    """`torch.no_grad()` as a decorator that imports torch only when the function runs."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import torch

        with torch.no_grad():
            return function(*args, **kwargs)

    return wrapper


@_no_grad
def letter_probabilities(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Sequence[int]],
    batch_size: int = 8,
    progress: bool = True,
    desc: str = "MMLU",
) -> np.ndarray:
    """P(A..D) after each tokenised prompt: left-padded batches, last position's logits.

    Position ids count real tokens only, so a question's probabilities do not depend on the
    batch it is in (tested).
    """
    import torch

    from superhf.batching import left_pad

    letter_ids = torch.tensor(letter_token_ids(tokenizer))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    try:
        for start in tqdm(
            range(0, len(prompts), batch_size), desc=desc, disable=not progress, unit="batch"
        ):
            batch = prompts[start : start + batch_size]
            input_ids, mask, positions = left_pad(batch, pad_id)
            logits = model(
                input_ids=input_ids.to(device),
                attention_mask=mask.to(device),
                position_ids=positions.to(device),
            ).logits[:, -1, :]
            letters = logits.float()[:, letter_ids.to(device)]
            out.append(torch.softmax(letters, dim=-1).cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(out) if out else np.zeros((0, 4))


def evaluate_calibration(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    questions: QuestionSet | Sequence[Question],
    fewshot: QuestionSet | Sequence[Question] | None = None,
    num_fewshot: int = 5,
    batch_size: int = 8,
    label: str = "model",
    progress: bool = True,
) -> CalibrationResult:
    """MMLU-style calibration of a causal LM (see the module docstring).

    `fewshot` is the pool of solved examples (MMLU's dev split); None takes them from the
    other questions. A prompt longer than the model's context loses shots until it fits.
    """
    num_skipped = questions.num_skipped if isinstance(questions, QuestionSet) else 0
    items = list(questions.questions if isinstance(questions, QuestionSet) else questions)
    if fewshot is None:
        pool = items
    else:
        pool = list(fewshot.questions if isinstance(fewshot, QuestionSet) else fewshot)
    max_length = getattr(model.config, "max_position_embeddings", None)
    prompts = [_fit_prompt(q, pool, num_fewshot, tokenizer, max_length) for q in items]
    # Longest first: batches of similar length waste less padding; order restored after.
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    probs_sorted = letter_probabilities(
        model, tokenizer, [prompts[i] for i in order], batch_size, progress, desc=label
    )
    probs = np.zeros_like(probs_sorted)
    probs[order] = probs_sorted
    return result_from_probabilities(
        probs, [q.answer for q in items], num_skipped, label, num_fewshot
    )


def save_results(
    results: Sequence[CalibrationResult],
    path: str | Path,
    settings: Mapping[str, Any] | None = None,
) -> Path:
    """calibration.json: the settings and one entry per model (no per-question data)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {**(settings or {}), "models": [r.to_dict() for r in results]}
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return path


# --- the plot ----------------------------------------------------------------------------


def reliability_diagram(
    result_or_results: CalibrationResult | Sequence[CalibrationResult], path: str | Path
) -> Path:
    """A PNG: per-bin hit-rate bars of all four choices' probabilities (the bins of the paper's
    calibration MSE) against the diagonal (perfect calibration), with counts.

    Several results share the figure, side by side within each bin. Uses matplotlib's Agg
    canvas directly, so it never touches the global backend.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    results = (
        [result_or_results]
        if isinstance(result_or_results, CalibrationResult)
        else list(result_or_results)
    )
    if not results:
        raise ValueError("reliability_diagram needs at least one result")
    figure = Figure(figsize=(6.5, 5.5), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfect")
    num_bins = len(results[0].bins)
    width = 1 / num_bins / (len(results) + 0.5)
    for k, result in enumerate(results):
        lowers = [b["lower"] for b in result.bins]
        heights = [b["accuracy"] or 0.0 for b in result.bins]
        x = [lo + (k + 0.25) * width for lo in lowers]
        bars = axes.bar(
            x,
            heights,
            width=width,
            align="edge",
            alpha=0.8,
            edgecolor="black",
            linewidth=0.5,
            label=f"{result.label}: acc {result.accuracy:.3f}, "
            f"MSE (all choices) {result.calibration_mse:.4f}, top-1 ECE {result.top1_ece:.3f}",
        )
        for bar, b in zip(bars, result.bins, strict=True):
            if b["count"]:
                axes.annotate(
                    f"n={b['count']}",
                    (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    xytext=(0, 2),
                    textcoords="offset points",
                    ha="center",
                    va="bottom",
                    fontsize=6,
                    rotation=90 if len(results) > 1 else 0,
                )
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.1)
    axes.set_xticks([i / num_bins for i in range(num_bins + 1)])
    axes.set_xlabel("probability given to a choice (all four choices of each question)")
    axes.set_ylabel("fraction of those choices that are the answer")
    axes.set_title(
        f"MMLU reliability, all choices ({results[0].num_fewshot}-shot, {num_bins} bins)"
    )
    axes.legend(loc="upper left", fontsize=7)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path


# --- the command ---------------------------------------------------------------------------


def load_eval_model(path: str, dtype: str = "float32") -> tuple[Any, Any, str]:
    """(model, tokenizer, name) for a hub id, model folder, LoRA run folder or embedded name.

    Uses `superhf.evaluation.heldout.load_policy`; naming the model as its own KL reference keeps it
    from loading a second model that calibration does not need.
    """
    from superhf.models import load_policy

    model, tokenizer, _, name = load_policy(path, dtype, reference_model=path)
    return model, tokenizer, name


def bins_table(result: CalibrationResult) -> Any:
    from rich.table import Table

    table = Table(
        title=f"{result.label}: per-bin calibration, all four choices", title_justify="left"
    )
    for column in ("bin", "count", "hit rate", "mean probability"):
        table.add_column(column, justify="right")
    for b in result.bins:
        if b["count"]:
            table.add_row(
                f"{b['lower']:.1f}-{b['upper']:.1f}",
                str(b["count"]),
                f"{b['accuracy']:.3f}",
                f"{b['confidence']:.3f}",
            )
    return table


def summary_table(results: Sequence[CalibrationResult]) -> Any:
    from rich.table import Table

    table = Table(title="MMLU calibration", title_justify="left")
    columns = ("model", "questions", "skipped", "accuracy", "calibration MSE", "top-1 ECE")
    for column in columns:
        table.add_column(column, justify="left" if column == "model" else "right")
    for r in results:
        table.add_row(
            r.label,
            str(r.num_questions),
            str(r.num_skipped),
            f"{r.accuracy:.3f}",
            f"{r.calibration_mse:.4f}",
            f"{r.top1_ece:.3f}",
        )
    return table


@dataclass
class CalibrationConfig:
    """Settings of `superhf calibrate` (MMLU 5-shot, as the paper)."""

    models: list[str] = config_field(
        [],
        "Hub ids, model folders, run folders (LoRA) or embedded:SmolLM2-135M-Instruct.",
        "models",
        positional="MODEL",
    )
    dtype: Literal["float32", "bfloat16"] = config_field(
        "float32", "Dtype the models are loaded in.", "models"
    )
    dataset: str = config_field("cais/mmlu", "cais/mmlu or a local file.", "questions")
    config_name: str | None = config_field("all", "Hub config.", "questions")
    split: str = config_field("test", "Hub split of the questions.", "questions")
    fewshot_split: str = config_field("dev", "Hub split of the few-shot examples.", "questions")
    fewshot_file: str | None = config_field(
        None,
        "Local file of few-shot examples (for a local --dataset the default is the other "
        "questions).",
        "questions",
    )
    num_fewshot: int = config_field(5, "Shots per prompt.", "questions")
    limit: int | None = config_field(None, "A seeded sample of N questions.", "questions")
    batch_size: int = config_field(8, "Prompts per forward.", "models")
    output_dir: str = config_field("runs/calibration", "Output folder.", "output")

    def __post_init__(self) -> None:
        check_types(self)
        if not self.models:
            raise ConfigError("calibrate: give at least one MODEL.")
        if self.num_fewshot < 0:
            raise ConfigError(f"num_fewshot must be >= 0, got {self.num_fewshot}.")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"limit must be >= 1, got {self.limit}.")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}.")


def parse_calibration_args(argv: list[str]) -> CalibrationConfig:
    """`superhf calibrate MODEL [MODEL ...] [--config FILE] [--name value ...]`."""
    return parse_config_args(
        CalibrationConfig,
        argv,
        prog="superhf calibrate",
        description="MMLU calibration: the paper's MSE over 10 bins, and ECE. Writes "
        "calibration.json and reliability.png into --output_dir.",
    )


def run_calibration(
    config: CalibrationConfig, console: Any | None = None
) -> list[CalibrationResult]:
    """`superhf calibrate`: evaluate each model, write calibration.json and reliability.png.

    Questions and few-shot examples load (and are checked) before any model does. Few-shot
    examples: `fewshot_file`; else the hub dataset's `fewshot_split`; else, for a local file,
    the other questions of that file.
    """
    dataset, config_name, split = config.dataset, config.config_name, config.split
    num_fewshot = config.num_fewshot
    local = is_local_path(dataset)
    questions = load_questions(dataset, None if local else config_name, split, config.limit)
    fewshot: QuestionSet | None = None
    if config.fewshot_file is not None:
        fewshot = load_questions(config.fewshot_file)
    elif not local and num_fewshot > 0:
        fewshot = load_questions(dataset, config_name, config.fewshot_split)
    if console is not None:
        skipped = f", {questions.num_skipped} rows skipped" if questions.num_skipped else ""
        first = f" (first: {questions.first_problem})" if questions.first_problem else ""
        pool = "the other questions" if fewshot is None else fewshot.source
        console.print(
            f"{len(questions)} questions from {questions.source}{skipped}{first}; "
            f"{num_fewshot}-shot examples from {pool}."
        )
    results = []
    for path in config.models:
        model, tokenizer, name = load_eval_model(path, config.dtype)
        result = evaluate_calibration(
            model, tokenizer, questions, fewshot, num_fewshot, config.batch_size, label=name
        )
        results.append(result)
        del model
        if console is not None:
            console.print(bins_table(result))
    out = Path(config.output_dir)
    settings = {
        "dataset": dataset,
        "config_name": None if local else config_name,
        "split": split,
        "fewshot": fewshot.source if fewshot is not None else "the other questions",
        "num_fewshot": num_fewshot,
        "limit": config.limit,
        "num_bins": NUM_BINS,
        "calibration_mse": "the paper's: all four choices' probabilities binned (hit = the "
        "choice is the answer); mean over non-empty bins of (bin hit rate - bin centre)^2",
        "top1_ece": "predicted letter's probability binned; sum over bins of "
        "n_b/N * |bin accuracy - bin mean confidence| (`ece`: the same, former name)",
        "top1_calibration_mse": "the calibration_mse formula on the top-1 bins",
    }
    save_results(results, out / "calibration.json", settings)
    reliability_diagram(results, out / "reliability.png")
    if console is not None:
        console.print(summary_table(results))
    return results
