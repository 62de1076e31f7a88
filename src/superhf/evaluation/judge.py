"""An LLM judge of pairs of answers, with Elo ratings and win rates (the paper's qualitative eval).

The paper asked GPT-4 "which response do you prefer, A or B?" about two models' answers to
the same prompt, and turned the preferences into Elo ratings (from 1500, K=32, averaged over
1,000 random orderings of the games). Here the judge is any OpenAI-compatible chat endpoint
or a local causal LM (the logits of "A" vs "B"), and each pair is judged in BOTH orders to
cancel position bias:

- a model wins a game only when both orders prefer it; disagreement (the judge followed the
  position, not the content) or an unparseable reply in either order is a tie (AlpacaEval's
  and MT-Bench's convention for swapped-position judging);
- every judge call is logged to a JSONL file as it happens: exactly the pairs judged, as
  shown to the judge, with the raw reply and the parsed verdict.

The API key comes from the environment (SUPERHF_JUDGE_API_KEY or OPENAI_API_KEY), never from
the command line, and is kept out of reprs, logs, error messages and output files (tested).
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import random
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from superhf.errors import ConfigError, DatasetError, JudgeError
from superhf.files import json_safe, read_json_lines, read_text
from superhf.settings import check_types, config_field, parse_config_args
from superhf.stats import wilson_interval

logger = logging.getLogger(__name__)

SYSTEM_PROMPT = (
    "We are evaluating the holistic quality of two AI chatbot assistants, A and B. "
    "Please select the response you prefer. Reply with just the letter and nothing else."
)
"""The paper's judge instruction (its reference code, preference mode)."""


def judge_user_prompt(prompt: str, answer_a: str, answer_b: str) -> str:
    """The paper's layout: the prompt, then the two responses labelled A and B."""
    return f"Prompt: {prompt.strip()}\nA: {answer_a.strip()}\nB: {answer_b.strip()}"


@dataclass
class JudgeReply:
    text: str
    """The judge's raw reply (for a local model: the more likely letter)."""
    details: dict[str, Any] | None = None
    """Extra facts, e.g. a local judge's P(A)."""


class Judge(Protocol):
    name: str

    def judge(self, prompt: str, answer_a: str, answer_b: str) -> JudgeReply: ...


# --- parsing -------------------------------------------------------------------------------

_TIE_WORDS = re.compile(r"\b(tie|both|neither|equal(ly)?|same)\b", re.I)
_LABELLED = re.compile(
    r"\b(?:response|answer|assistant|option|output)\s*\(?([AB])\)?(?![\w])", re.I
)


def parse_verdict(text: str) -> str | None:
    """ "A", "B" or None (unparseable or a tie) from a judge's reply.

    Accepts "A", "b", "(A)", "**B**", "A.", "Response A", "I prefer Response B.",
    "B is better". Replies naming both letters, or a tie, give None.
    """
    cleaned = re.sub(r"[*_`'\"#]", "", text or "").strip()
    if not cleaned:
        return None
    single = re.fullmatch(r"[\[(]?\s*([AB])\s*[\])]?[.!:,]?", cleaned, re.I)
    if single:
        return single.group(1).upper()
    labelled = {m.upper() for m in _LABELLED.findall(cleaned)}
    if len(labelled) == 1:
        return labelled.pop()
    if labelled or _TIE_WORDS.search(cleaned):
        return None
    bare = set(re.findall(r"(?<![\w(])([AB])(?![\w)])", cleaned))  # capital letters as words
    return bare.pop() if len(bare) == 1 else None


# --- an OpenAI-compatible endpoint ---------------------------------------------------------


class _Secret:
    """Holds the API key; its repr and str are "***", so vars(), logs and tracebacks that show
    the judge object do not show the key."""

    __slots__ = ("_value",)

    def __init__(self, value: str | None) -> None:
        self._value = value or None

    def reveal(self) -> str | None:
        return self._value

    def __repr__(self) -> str:
        return "***" if self._value else "None"

    __str__ = __repr__


def _first_env(*names: str) -> str | None:
    for name in names:
        value = os.environ.get(name)
        if value:
            return value
    return None


class OpenAIChatJudge:
    """Any OpenAI-compatible `/chat/completions` endpoint, temperature 0, a few tokens.

    base_url: the argument, else $SUPERHF_JUDGE_BASE_URL, else $OPENAI_BASE_URL, else
    OpenAI's. api_key: the argument, else $SUPERHF_JUDGE_API_KEY, else $OPENAI_API_KEY (none:
    no Authorization header, for local servers). 429, 5xx, timeouts and connection errors are
    retried with exponential backoff (Retry-After honoured); 401/403 stop at once.
    """

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 5,
        backoff: float = 1.0,
        max_tokens: int = 5,
        system_prompt: str = SYSTEM_PROMPT,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.name = model
        self.model = model
        base = base_url or _first_env("SUPERHF_JUDGE_BASE_URL", "OPENAI_BASE_URL")
        self.base_url = (base or "https://api.openai.com/v1").rstrip("/")
        self._api_key = _Secret(api_key or _first_env("SUPERHF_JUDGE_API_KEY", "OPENAI_API_KEY"))
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_tokens = max_tokens
        self.system_prompt = system_prompt
        self._sleep = sleep

    def __repr__(self) -> str:
        key = "set" if self._api_key.reveal() else "none"
        return f"OpenAIChatJudge(model={self.model!r}, base_url={self.base_url!r}, api_key={key})"

    def describe(self) -> dict[str, Any]:
        """What may be written to an output file: no key."""
        return {"backend": "openai-chat", "model": self.model, "base_url": self.base_url}

    def _redact(self, text: str) -> str:
        key = self._api_key.reveal()
        return text.replace(key, "***") if key else text

    def _post(self, body: bytes) -> tuple[int, str, str | None]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = self._api_key.reveal()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(
            f"{self.base_url}/chat/completions", data=body, headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.status, response.read().decode("utf-8", "replace"), None
        except urllib.error.HTTPError as err:
            text = err.read().decode("utf-8", "replace") if err.fp else ""
            return err.code, text, err.headers.get("Retry-After") if err.headers else None

    def judge(self, prompt: str, answer_a: str, answer_b: str) -> JudgeReply:
        payload = {
            "model": self.model,
            "messages": [
                {"role": "system", "content": self.system_prompt},
                {"role": "user", "content": judge_user_prompt(prompt, answer_a, answer_b)},
            ],
            "temperature": 0,
            "max_tokens": self.max_tokens,
        }
        body = json.dumps(payload).encode("utf-8")
        url = f"{self.base_url}/chat/completions"
        problem = ""
        for attempt in range(self.max_retries + 1):
            retry_after: str | None = None
            try:
                status, text, retry_after = self._post(body)
            except OSError as err:  # URLError, timeouts, refused connections
                status, text = 0, ""
                problem = f"cannot reach {url}: {self._redact(str(err))}"
            if status in (401, 403):
                raise JudgeError(
                    f"judge endpoint {url} refused the request (HTTP {status}): check the API "
                    "key in $SUPERHF_JUDGE_API_KEY or $OPENAI_API_KEY. Server said: "
                    f"{self._redact(text)[:300]}"
                )
            if status == 200:
                return JudgeReply(self._content(text, url))
            if status == 429 or status >= 500:
                problem = f"HTTP {status} from {url}: {self._redact(text)[:300]}"
            elif status != 0:
                raise JudgeError(f"HTTP {status} from {url}: {self._redact(text)[:300]}")
            if attempt < self.max_retries:
                delay = self.backoff * 2**attempt
                if retry_after and retry_after.replace(".", "", 1).isdigit():
                    delay = max(delay, min(float(retry_after), 60.0))
                logger.warning("judge: %s; retry %d in %.1f s", problem, attempt + 1, delay)
                self._sleep(delay)
        raise JudgeError(f"judge failed after {self.max_retries + 1} attempts: {problem}")

    def _content(self, text: str, url: str) -> str:
        try:
            content = json.loads(text)["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise JudgeError(
                f"unexpected reply from {url} (no choices[0].message.content): "
                f"{self._redact(text)[:300]}"
            ) from None
        return self._redact(str(content or ""))


# --- a local causal LM ---------------------------------------------------------------------


class LocalHFJudge:
    """A causal LM given the same judge prompt; the verdict is the likelier of "A" and "B".

    No sampling: P(A) = softmax over the next-token logits of the two letters (each letter's
    logit is the log-sum-exp over its single-token spellings "A" and " A"). The prompt uses
    the tokenizer's chat template when it has one.
    """

    def __init__(
        self,
        model_or_path: Any,
        tokenizer: Any | None = None,
        dtype: str = "float32",
        system_prompt: str = SYSTEM_PROMPT,
    ) -> None:
        import torch

        from superhf.models import load_model, load_tokenizer

        if isinstance(model_or_path, str):
            self.name = model_or_path
            self.tokenizer = tokenizer or load_tokenizer(model_or_path)  # ConfigError if absent
            self.model = load_model(model_or_path, dtype)
        else:
            self.model = model_or_path
            self.name = getattr(model_or_path, "name_or_path", "") or "local-model"
            if tokenizer is None:
                raise ValueError("LocalHFJudge needs a tokenizer with a model object")
            self.tokenizer = tokenizer
        self.model.eval()
        self.system_prompt = system_prompt
        self._torch = torch
        self._letter_ids = [self._spellings(letter) for letter in ("A", "B")]

    def describe(self) -> dict[str, Any]:
        return {"backend": "local-hf", "model": self.name}

    def _spellings(self, letter: str) -> list[int]:
        ids = {
            tuple(self.tokenizer.encode(s, add_special_tokens=False))
            for s in (letter, f" {letter}")
        }
        single = sorted(i[0] for i in ids if len(i) == 1)
        if not single:
            raise ValueError(f"the judge's tokenizer has no single token for {letter!r}")
        return single

    def _text(self, prompt: str, answer_a: str, answer_b: str) -> str:
        user = judge_user_prompt(prompt, answer_a, answer_b)
        if getattr(self.tokenizer, "chat_template", None):
            messages = [
                {"role": "system", "content": self.system_prompt},
                {"role": "user", "content": user},
            ]
            return self.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )
        return f"{self.system_prompt}\n\n{user}\n\nPreferred response:"

    def judge(self, prompt: str, answer_a: str, answer_b: str) -> JudgeReply:
        torch = self._torch
        text = self._text(prompt, answer_a, answer_b)
        ids = self.tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
        device = next(self.model.parameters()).device
        with torch.no_grad():
            logits = self.model(input_ids=ids.to(device)).logits[0, -1].float()
        scores = torch.stack([torch.logsumexp(logits[ids_], dim=0) for ids_ in self._letter_ids])
        p_a = float(torch.softmax(scores, dim=0)[0])
        return JudgeReply("A" if p_a >= 0.5 else "B", {"p_a": p_a})


# --- judging pairs -------------------------------------------------------------------------


@dataclass
class Judgement:
    """One judge call: exactly what the judge saw and said."""

    prompt_index: int
    prompt: str
    model_a: str
    """The model whose answer was shown as A."""
    model_b: str
    answer_a: str
    answer_b: str
    order: int
    """1: the pair's first model shown as A; 2: the swapped order."""
    raw: str
    verdict: str | None
    """"A", "B" or None (unparseable or a tie)."""
    preferred: str | None
    """The model the verdict points at."""
    details: dict[str, Any] | None = None


@dataclass(frozen=True)
class Game:
    """One game for Elo: `score` is 1 if model_1 won, 0 if model_2 won, 0.5 a tie."""

    model_1: str
    model_2: str
    score: float


@dataclass
class JudgeResult:
    judgements: list[Judgement]
    games: list[Game]
    elo: dict[str, float]
    win_rates: list[dict[str, Any]]
    num_invalid: int
    """Judge calls whose reply could not be parsed (their games count as ties)."""
    num_inconsistent: int
    """Games whose two orders disagreed (ties)."""
    first_position_rate: float
    """Share of parsed verdicts that chose the answer shown first (0.5 = no position bias)."""
    judge: dict[str, Any] = field(default_factory=dict)
    elo_settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "judge": self.judge,
            "rule": "a win needs both orders to agree; disagreement or an unparseable reply is "
            "a tie",
            "elo": self.elo,
            "elo_settings": self.elo_settings,
            "win_rates": self.win_rates,
            "num_judgements": len(self.judgements),
            "num_games": len(self.games),
            "num_invalid": self.num_invalid,
            "num_inconsistent": self.num_inconsistent,
            "first_position_rate": None
            if math.isnan(self.first_position_rate)
            else self.first_position_rate,
        }


def _combine(first: Judgement, second: Judgement, m1: str, m2: str) -> float:
    if first.preferred is not None and first.preferred == second.preferred:
        return 1.0 if first.preferred == m1 else 0.0
    return 0.5


def judge_pairs(
    judge: Judge,
    prompts: Sequence[str],
    answers: dict[str, Sequence[str]],
    log_path: str | Path | None = None,
    seed: int = 0,
    model_pairs: Sequence[tuple[str, str]] | None = None,
    num_orderings: int = 1000,
    progress: bool = True,
) -> JudgeResult:
    """Judge every pair of models (or `model_pairs`) on every prompt, in both orders.

    `answers[model][i]` answers `prompts[i]`. Each judgement is appended to `log_path` (JSONL)
    as it is made. `seed` fixes the order games are judged in and the Elo orderings.
    """
    models = list(answers)
    for name, texts in answers.items():
        if len(texts) != len(prompts):
            raise ValueError(f"model {name!r} has {len(texts)} answers for {len(prompts)} prompts")
    pairs = (
        list(model_pairs) if model_pairs is not None else list(itertools.combinations(models, 2))
    )
    for m1, m2 in pairs:
        if m1 not in answers or m2 not in answers or m1 == m2:
            raise ValueError(f"model pair ({m1!r}, {m2!r}) is not two of {models}")
    tasks = [(i, m1, m2) for i in range(len(prompts)) for m1, m2 in pairs]
    random.Random(seed).shuffle(tasks)
    log = None
    if log_path is not None:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        log = open(log_path, "w", encoding="utf-8")  # noqa: SIM115 - closed in finally
    judgements: list[Judgement] = []
    games: list[Game] = []
    inconsistent = 0
    try:
        from tqdm.auto import tqdm

        for i, m1, m2 in tqdm(tasks, desc="judge", disable=not progress, unit="pair"):
            both = []
            for order, (a, b) in enumerate(((m1, m2), (m2, m1)), start=1):
                reply = judge.judge(prompts[i], answers[a][i], answers[b][i])
                verdict = parse_verdict(reply.text)
                if verdict is None:
                    logger.info("judge: no verdict parsed from %r (prompt %d)", reply.text, i)
                preferred = {"A": a, "B": b}.get(verdict or "")
                judgement = Judgement(
                    i, prompts[i], a, b, answers[a][i], answers[b][i], order, reply.text,
                    verdict, preferred, reply.details,
                )  # fmt: skip
                judgements.append(judgement)
                both.append(judgement)
                if log is not None:
                    log.write(json.dumps(asdict(judgement), ensure_ascii=False) + "\n")
                    log.flush()
            score = _combine(both[0], both[1], m1, m2)
            if score == 0.5 and both[0].preferred and both[1].preferred:
                inconsistent += 1
            games.append(Game(m1, m2, score))
    finally:
        if log is not None:
            log.close()
    parsed = [j for j in judgements if j.verdict is not None]
    first_rate = sum(j.verdict == "A" for j in parsed) / len(parsed) if parsed else math.nan
    describe = getattr(judge, "describe", None)
    return JudgeResult(
        judgements=judgements,
        games=games,
        elo=elo_ratings(games, num_orderings=num_orderings, seed=seed) if games else {},
        win_rates=win_rates(games),
        num_invalid=len(judgements) - len(parsed),
        num_inconsistent=inconsistent,
        first_position_rate=first_rate,
        judge=describe() if callable(describe) else {"model": judge.name},
        elo_settings={"initial": 1500, "k": 32, "num_orderings": num_orderings, "seed": seed},
    )


# --- Elo and win rates ---------------------------------------------------------------------


def elo_ratings(
    games: Sequence[Game],
    k: float = 32,
    initial: float = 1500,
    num_orderings: int = 1000,
    seed: int = 0,
) -> dict[str, float]:
    """Elo ratings averaged over `num_orderings` random orderings of the games (the paper's).

    Each ordering starts every model at `initial` and applies, game by game,
    R1 += k (S - E1), R2 -= k (S - E1), E1 = 1 / (1 + 10^((R2 - R1) / 400)). The games are put
    in a canonical order before shuffling, so the result does not depend on the order they
    are given in. `num_orderings=0` plays them once, in the given order.
    """
    models = sorted({g.model_1 for g in games} | {g.model_2 for g in games})
    if not games:
        return {}
    index = {m: n for n, m in enumerate(models)}
    if num_orderings > 0:
        games = sorted(games, key=lambda g: (g.model_1, g.model_2, g.score))
        rng = np.random.default_rng(seed)
        orders = np.stack([rng.permutation(len(games)) for _ in range(num_orderings)])
    else:
        orders = np.arange(len(games))[None, :]
    first = np.array([index[g.model_1] for g in games])
    second = np.array([index[g.model_2] for g in games])
    score = np.array([g.score for g in games], dtype=float)
    ratings = np.full((len(orders), len(models)), float(initial))
    rows = np.arange(len(orders))
    for step in range(len(games)):  # all orderings advance together, one game each
        game = orders[:, step]
        a, b = first[game], second[game]
        expected = 1 / (1 + 10 ** ((ratings[rows, b] - ratings[rows, a]) / 400))
        delta = k * (score[game] - expected)
        ratings[rows, a] += delta
        ratings[rows, b] -= delta
    mean = ratings.mean(axis=0)
    return {m: float(mean[index[m]]) for m in models}


def win_rates(games: Sequence[Game], confidence: float = 0.95) -> list[dict[str, Any]]:
    """Per pair of models: wins, losses, ties and model_1's win rate (ties count half),
    with a Wilson interval."""
    tally: dict[tuple[str, str], list[float]] = {}
    for g in games:
        key, s = ((g.model_1, g.model_2), g.score)
        if g.model_2 < g.model_1:
            key, s = (g.model_2, g.model_1), 1 - g.score
        wins, losses, ties = tally.setdefault(key, [0, 0, 0])
        tally[key] = [wins + (s == 1), losses + (s == 0), ties + (s == 0.5)]
    rows = []
    for (m1, m2), (wins, losses, ties) in sorted(tally.items()):
        n = int(wins + losses + ties)
        rate = (wins + ties / 2) / n
        low, high = wilson_interval(wins + ties / 2, n, confidence)
        rows.append(
            {
                "model_1": m1,
                "model_2": m2,
                "wins": int(wins),
                "losses": int(losses),
                "ties": int(ties),
                "games": n,
                "win_rate": rate,
                "ci_low": low,
                "ci_high": high,
            }
        )
    return rows


# --- the command ---------------------------------------------------------------------------


@dataclass
class AnswerSet:
    """Answers aligned by prompt: `answers[model][i]` answers `prompts[i]`."""

    prompts: list[str]
    answers: dict[str, list[str]]
    num_unaligned: int = 0
    """Prompts not answered by every model (left out)."""
    num_duplicates: int = 0
    """Further completions of a (model, prompt) already seen (the first one is judged)."""


def load_answer_files(paths: Sequence[str | Path]) -> AnswerSet:
    """Completions JSONL files of `superhf eval` (rows {"prompt", "completion", "model"}).

    Several files, or one file with several models. A model's first completion to each
    prompt is used; prompts not answered by every model are left out (counted).
    DatasetError, naming the file, line and field, for unusable input.
    """
    by_model: dict[str, dict[str, str]] = {}
    order: list[str] = []
    duplicates = 0
    for path in map(Path, paths):
        if not path.is_file():
            raise DatasetError(f"answers: no such file {str(path)!r}.")
        for line in read_json_lines(read_text(path, "answers"), str(path), "answers"):
            row, where = line.value, f"{path}, line {line.number}"
            for name in ("prompt", "completion", "model"):
                if not isinstance(row.get(name), str):
                    raise DatasetError(
                        f"answers: {where}: field `{name}` is missing or not a string "
                        "(rows need prompt, completion and model, as `superhf eval` writes)."
                    )
            answers = by_model.setdefault(row["model"], {})
            if row["prompt"] in answers:
                duplicates += 1
                continue
            answers[row["prompt"]] = row["completion"]
            if row["prompt"] not in order:
                order.append(row["prompt"])
    if len(by_model) < 2:
        raise DatasetError(
            f"answers: {', '.join(map(str, paths))} hold {len(by_model)} model(s) "
            f"({', '.join(by_model) or 'none'}); judging needs at least two."
        )
    common = [p for p in order if all(p in a for a in by_model.values())]
    if not common:
        raise DatasetError(
            "answers: no prompt is answered by every model "
            f"({', '.join(by_model)}); the files must come from the same prompts."
        )
    return AnswerSet(
        prompts=common,
        answers={m: [a[p] for p in common] for m, a in by_model.items()},
        num_unaligned=len(order) - len(common),
        num_duplicates=duplicates,
    )


def elo_table(result: JudgeResult) -> Any:
    from rich.table import Table

    table = Table(title="Elo (1500 start, K=32, mean over orderings)", title_justify="left")
    table.add_column("model")
    table.add_column("Elo", justify="right")
    for model, rating in sorted(result.elo.items(), key=lambda kv: -kv[1]):
        table.add_row(model, f"{rating:.1f}")
    return table


def win_rate_table(result: JudgeResult) -> Any:
    from rich.table import Table

    table = Table(title="Win rates (ties count half; 95% Wilson interval)", title_justify="left")
    for column in ("model 1", "model 2", "wins", "losses", "ties", "win rate", "95% CI"):
        table.add_column(column, justify="left" if column.startswith("model") else "right")
    for r in result.win_rates:
        table.add_row(
            r["model_1"], r["model_2"], str(r["wins"]), str(r["losses"]), str(r["ties"]),
            f"{r['win_rate']:.3f}", f"{r['ci_low']:.3f}-{r['ci_high']:.3f}",
        )  # fmt: skip
    return table


@dataclass
class JudgeConfig:
    """Settings of `superhf judge`."""

    files: list[str] = config_field(
        [],
        "completions-*.jsonl of `superhf eval` (rows: prompt, completion, model): two or more "
        "files, or one file with several models.",
        "answers",
        positional="FILE",
    )
    judge_model: str | None = config_field(
        None, "Judge (required): a chat model name, or (local) a model.", "judge"
    )
    judge_url: str | None = config_field(
        None,
        "OpenAI-compatible base URL (default $SUPERHF_JUDGE_BASE_URL, $OPENAI_BASE_URL). The "
        "key is read from $SUPERHF_JUDGE_API_KEY or $OPENAI_API_KEY only.",
        "judge",
    )
    judge_backend: str = config_field(
        "api", "api (chat endpoint) or local (HF causal LM).", "judge"
    )
    num_prompts: int | None = config_field(None, "Judge the first N aligned prompts.", "answers")
    num_orderings: int = config_field(1000, "Random game orderings Elo is averaged over.", "elo")
    seed: int = config_field(0, "Judging order and Elo orderings.", "elo")
    output_dir: str = config_field("runs/judge", "Output folder.", "output")

    def __post_init__(self) -> None:
        check_types(self)
        if not self.files:
            raise ConfigError("FILE: give the completions files of `superhf eval` to judge.")
        if not self.judge_model:
            raise ConfigError("judge_model: give the judge, e.g. --judge_model gpt-4o-mini.")
        if self.judge_backend not in ("api", "local"):
            raise ConfigError(f"judge_backend must be api or local, got {self.judge_backend!r}.")
        if self.num_prompts is not None and self.num_prompts < 1:
            raise ConfigError(f"num_prompts must be >= 1, got {self.num_prompts}.")
        if self.num_orderings < 1:
            raise ConfigError(f"num_orderings must be >= 1, got {self.num_orderings}.")


def parse_judge_args(argv: list[str]) -> JudgeConfig:
    """`superhf judge FILE [FILE ...] --judge_model NAME [--name value ...]`."""
    return parse_config_args(
        JudgeConfig,
        argv,
        prog="superhf judge",
        description="Pairwise LLM judge, both orders per pair; Elo and win rates. Writes "
        "judge.json and judgements.jsonl (every judge call) into --output_dir.",
    )


def make_judge(config: JudgeConfig) -> Judge:
    """The judge `config` names: a local causal LM or an OpenAI-compatible endpoint."""
    if config.judge_backend == "local":
        return LocalHFJudge(config.judge_model)
    return OpenAIChatJudge(config.judge_model, base_url=config.judge_url)


def run_judge(config: JudgeConfig, judge: Judge, console: Any | None = None) -> JudgeResult:
    """`superhf judge`: align the answers, judge every pair both ways, write judge.json and
    judgements.jsonl, print the Elo and win-rate tables."""
    files, num_prompts = config.files, config.num_prompts
    answer_set = load_answer_files(files)
    prompts = answer_set.prompts[:num_prompts] if num_prompts else answer_set.prompts
    answers = {m: a[: len(prompts)] for m, a in answer_set.answers.items()}
    out = Path(config.output_dir)
    if console is not None:
        console.print(
            f"{len(answers)} models x {len(prompts)} prompts "
            f"({answer_set.num_unaligned} prompts not answered by every model left out); "
            f"judge: {judge.name}; every pair judged in both orders."
        )
    result = judge_pairs(
        judge,
        prompts,
        answers,
        out / "judgements.jsonl",
        config.seed,
        num_orderings=config.num_orderings,
    )
    data = {
        "files": [str(f) for f in files],
        "num_prompts": len(prompts),
        "num_prompts_unaligned": answer_set.num_unaligned,
        "num_duplicate_completions": answer_set.num_duplicates,
        **result.to_dict(),
    }
    (out / "judge.json").write_text(json.dumps(json_safe(data), indent=2) + "\n", encoding="utf-8")
    if console is not None:
        console.print(elo_table(result))
        console.print(win_rate_table(result))
        console.print(
            f"{result.num_invalid} unparseable replies, {result.num_inconsistent} games whose "
            f"two orders disagreed (ties); first position chosen "
            f"{result.first_position_rate:.0%} of the time."
        )
    return result
