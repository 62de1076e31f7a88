"""Sampling: all n completions of a prompt in one batched decode loop, then trimming.

Each prompt's forward pass runs once and its KV cache is shared by its n samples (never the
prompt repeated n times); prompts are left-padded and sorted by length to waste less padding.

With `seeds` (one per prompt) each sample draws from its own generator, seeded from its
prompt's seed and its sample index (`derive_seed`): a prompt gets the same samples whichever
batch or process it lands in (up to float rounding when padding changes the logits). The
trainer seeds them from (run seed, iteration, prompt position), so a run does not depend on
the number of processes (`superhf.train.distributed`).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import (
    DynamicCache,
    DynamicLayer,
    LogitsProcessor,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from superhf.batching import encode_prompt, left_pad
from superhf.config import SamplingSettings


class NucleusSampler(LogitsProcessor):
    """Temperature, then top-k, then top-p, with the same result as transformers' warpers.

    transformers' top-p sorts the whole vocabulary at every step (83 ms per step for 32
    sequences over SmolLM2's 49k tokens, on 2 CPU cores). The nucleus usually lies within the
    top few hundred tokens, so this takes the top `candidates[0]` of every row first (sorted by
    `topk`), then the top `candidates[1]` of the rows whose candidates do not reach `top_p`, and
    sorts the whole vocabulary only for rows that still fall short, so the kept set is exact.
    Measured on SmolLM2-135M-Instruct's own samples (temperature 1, top_p 0.95): 38% of rows
    need more than 256 tokens, 0.5% more than 4,096; `topk` of 4,096 costs a fifth of a sort.

    `sample` draws from those candidates without building the full-vocabulary distribution
    (the decode loop's path); calling the sampler gives the filtered full-vocabulary logits
    (transformers' `LogitsProcessor` interface), and `inverse_cdf_sample` of those draws the
    same token for the same uniform.
    """

    def __init__(
        self,
        temperature: float,
        top_k: int,
        top_p: float,
        candidates: tuple[int, ...] = (256, 4096),
    ):
        self.temperature, self.top_k, self.top_p = temperature, top_k, top_p
        self.candidates = candidates

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        groups = self._kept(scores)
        if groups[0][2] is None:  # no filtering
            return groups[0][1]
        out = torch.full_like(scores, -float("inf"))
        for rows, values, indices in groups:
            out[rows] = out[rows].scatter_(-1, indices, values)
        return out

    def sample(self, scores: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
        """One token id per row of `scores` (raw logits): `inverse_cdf_sample(self(..., scores),
        uniforms)`, computed over each row's candidates only."""
        tokens = torch.empty(len(scores), dtype=torch.long, device=scores.device)
        for rows, values, indices in self._kept(scores):
            if indices is None:
                return inverse_cdf_sample(values, uniforms)
            order = indices.argsort(-1)  # vocabulary order, as the full distribution's
            drawn = inverse_cdf_sample(values.gather(-1, order), uniforms[rows.cpu()])
            tokens[rows] = indices.gather(-1, order).gather(-1, drawn[:, None]).squeeze(1)
        return tokens

    def _kept(
        self, scores: torch.Tensor
    ) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
        """(rows, candidate logits, candidate token ids) per group of rows; logits past the
        nucleus are -inf. One group of all rows with ids None when nothing is filtered."""
        if self.temperature != 1.0:
            scores = scores / self.temperature
        vocab = scores.shape[-1]
        rows = torch.arange(len(scores), device=scores.device)
        if self.top_p >= 1.0 and not self.top_k:
            return [(rows, scores, None)]
        if self.top_k:  # the nucleus, if any, within the top k (renormalised), as transformers
            values, indices = scores.topk(min(self.top_k, vocab), dim=-1)
            if self.top_p < 1.0:
                values = self._nucleus(values, values.double().logsumexp(-1, keepdim=True))[0]
            return [(rows, values, indices)]
        # log of the softmax's normaliser in float64 (float32's logsumexp rounds it to about
        # 1e-6, enough to move the nucleus's edge on a flat row)
        top = scores.max(-1, keepdim=True).values
        log_norm = top.double() + (scores - top).exp().sum(-1, keepdim=True).double().log()
        groups = []
        for k in (*self.candidates, vocab):
            part = scores if len(groups) == 0 else scores[rows]
            values, indices = part.topk(min(k, vocab), dim=-1)  # sorted, largest first
            kept, reached = self._nucleus(values, log_norm[rows])
            if k >= vocab:
                reached = torch.ones_like(reached)
            groups.append((rows[reached], kept[reached], indices[reached]))
            rows = rows[~reached]
            if len(rows) == 0:
                break
        return groups

    def _nucleus(
        self, values: torch.Tensor, log_norm: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sorted candidate logits with those past the nucleus set to -inf, and whether each
        row's candidates reach `top_p` (else its nucleus extends beyond them). In float64: on a
        flat row the nucleus holds tens of thousands of tokens, and with float32 masses logits
        1e-7 apart (a merged copy's and the policy's) kept different sets."""
        probs = (values.double() - log_norm).exp()
        mass_before = probs.cumsum(-1) - probs
        kept = values.masked_fill(mass_before >= self.top_p, -float("inf"))
        return kept, probs.sum(-1) >= self.top_p


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed from its parts (e.g. run seed, iteration, prompt position), the same on
    every machine and process (Python's `hash` of strings is salted per process)."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def sample_uniforms(seeds: Sequence[int], num_steps: int) -> torch.Tensor:
    """(len(seeds), num_steps) uniforms in [0, 1), row i from its own generator seeded with
    seeds[i]: one draw per decode step, whatever the row's batch mates."""
    rows = [torch.rand(num_steps, generator=torch.Generator().manual_seed(s)) for s in seeds]
    return torch.stack(rows).double()


def inverse_cdf_sample(logits: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """One token per row of `logits` (-inf where excluded): the first whose cumulative weight
    exceeds the row's uniform times the row's total, with weights exp(logit - max) in float64
    (unnormalised: a softmax's rounding would make the draw depend on which tokens sit beside
    the kept ones). A token of weight 0 is never drawn."""
    weights = (logits - logits.max(-1, keepdim=True).values).double().exp()
    cdf = weights.cumsum(-1)
    target = (uniforms.to(cdf.device) * cdf[:, -1]).unsqueeze(1)
    token = torch.searchsorted(cdf, target, right=True).squeeze(1)
    return token.clamp(max=logits.shape[-1] - 1)


class PreallocatedLayer(DynamicLayer):
    """One layer's keys and values in buffers sized for the whole sample, handed out as views.

    `DynamicLayer` concatenates each new position onto the whole cache, copying every key and
    value of every layer at every decode step (about a tenth of a bf16 decode step on 2 CPU
    cores, bench/README.md); here a step writes its one position in place. Built from the
    prompt pass's layer, for `capacity` positions in all.
    """

    def __init__(self, layer: DynamicLayer, capacity: int):
        super().__init__()
        batch, heads, length, dim = layer.keys.shape
        self._keys = layer.keys.new_empty(batch, heads, capacity, dim)
        self._values = layer.values.new_empty(batch, heads, capacity, dim)
        self._keys[:, :, :length] = layer.keys
        self._values[:, :, :length] = layer.values
        self.device, self.is_initialized, self.length = layer.keys.device, True, length
        self._show()

    def _show(self) -> None:
        self.keys = self._keys[:, :, : self.length]
        self.values = self._values[:, :, : self.length]

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        end = self.length + key_states.shape[-2]
        self._keys[:, :, self.length : end] = key_states
        self._values[:, :, self.length : end] = value_states
        self.length = end
        self._show()
        return self.keys, self.values

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._keys, self._values = self._keys[indices], self._values[indices]
        self._show()


@dataclass
class Completion:
    prompt_index: int
    """Index of the prompt (in the list given to `generate_completions`) it answers."""
    text: str
    """The completion, cut at the stop token and at the first stop sequence (what is scored)."""
    num_tokens: int
    """Tokens sampled for it, up to and including the stop token."""
    clipped: bool
    """True when it hit max_completion_length without a stop token or a stop sequence."""
    token_ids: list[int] | None = None
    """The sampled ids the policy trains on and the KL scores, never a re-tokenization of
    `text` (decoding and encoding again can merge tokens or lose spaces): through the stop
    token that ended the sample (whichever of the model's end ids it was); through the token
    that completed a stop sequence when one ended it first (`trim_completion` says why);
    every sampled id, with no end token, when clipped. None for a completion made from text."""

    def training_ids(self, tokenizer: PreTrainedTokenizerBase) -> list[int]:
        """`token_ids`; for a completion made from text alone, its tokens plus the tokenizer's
        EOS unless clipped (the closest to what a sample that ended there would be)."""
        if self.token_ids is not None:
            return list(self.token_ids)
        ids = tokenizer(self.text, add_special_tokens=False)["input_ids"]
        return ids if self.clipped else [*ids, tokenizer.eos_token_id]


@dataclass
class GenerationStats:
    num_sampled_tokens: int = 0
    num_empty: int = 0
    """Completions dropped because nothing was left after trimming."""
    seconds: float = 0.0


def stop_token_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    ids = model.generation_config.eos_token_id
    ids = [] if ids is None else [ids] if isinstance(ids, int) else list(ids)
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


def trim_completion(
    token_ids: list[int],
    stop_ids: list[int],
    stop_sequences: list[str],
    tokenizer: PreTrainedTokenizerBase,
    prompt_index: int = 0,
) -> Completion:
    """Cut a sampled row at the first stop token, then at the first stop sequence.

    The text (what is scored) ends before either. The ids (what is trained on) are the sampled
    ones, so the loss and the KL are on the sequence the policy produced: through the stop
    token, or, when a stop sequence (e.g. "\n\nHuman:") came first, through the token that
    completed it. That is how the sample ended, and appending an EOS there instead would
    train on, and score, a token that was never sampled (for a base model in the HH format,
    the turn delimiter *is* its way of ending a turn). None of that for a clipped row: all its
    ids, no end token.
    """
    end = next((i for i, t in enumerate(token_ids) if t in stop_ids), None)
    num_tokens = len(token_ids) if end is None else end + 1
    before_stop = token_ids[:end] if end is not None else token_ids
    text = tokenizer.decode(before_stop, skip_special_tokens=True)
    found = [(p, len(s), s) for s in stop_sequences if (p := text.find(s)) >= 0]
    kept = token_ids[:num_tokens]
    if found:
        cut, _, stop = min(found)  # the earliest; of those starting there, the first to end
        text = text[:cut]
        kept = before_stop[: _ids_through(before_stop, cut, stop, tokenizer)]
    clipped = end is None and not found
    return Completion(prompt_index, text.rstrip(), num_tokens, clipped, kept)


def _ids_through(ids: list[int], cut: int, stop: str, tokenizer: PreTrainedTokenizerBase) -> int:
    """How many leading ids it takes for their text to hold `stop` at character `cut`."""
    lo, hi = 1, len(ids)  # bisect: once a prefix's text holds it, every longer one does
    while lo < hi:
        mid = (lo + hi) // 2
        text = tokenizer.decode(ids[:mid], skip_special_tokens=True)
        if text[cut : cut + len(stop)] == stop:
            hi = mid
        else:
            lo = mid + 1
    return lo


@torch.no_grad()
def sample_shared_prompts(
    model: PreTrainedModel,
    prompts: list[list[int]],
    samples_per_prompt: int,
    max_new_tokens: int,
    sampler: NucleusSampler,
    stop_ids: list[int],
    pad_id: int,
    sample_seeds: Sequence[int] | None = None,
) -> list[list[int]]:
    """New tokens for `samples_per_prompt` samples of each prompt (prompt-major order).

    `sample_seeds`: one per sequence (prompt-major); each then samples from its own stream
    (`sample_uniforms`); without them every row draws from torch's global generator.

    A plain decode loop instead of `generate(num_return_sequences=n)`, which copies every
    prompt n times *before* its forward pass: here each prompt is computed once and its keys
    and values are shared by its n samples (measured 2-4x faster than `generate` on 2 CPU cores).
    Left padding; position ids count real tokens only, as in training.
    """
    device = next(model.parameters()).device
    input_ids, mask, position_ids = (t.to(device) for t in left_pad(prompts, pad_id))
    cache = DynamicCache()
    out = model(
        input_ids=input_ids,
        attention_mask=mask,
        position_ids=position_ids,
        cache=cache,
        use_cache=True,
        logits_to_keep=1,
    )
    n = samples_per_prompt
    cache.batch_repeat_interleave(n)  # filled in place by the prompt pass
    capacity = input_ids.shape[1] + max_new_tokens
    cache.layers = [PreallocatedLayer(layer, capacity) for layer in cache.layers]
    logits = out.logits[:, -1].float().repeat_interleave(n, dim=0)
    mask = mask.repeat_interleave(n, dim=0)
    positions = mask.sum(-1, keepdim=True)
    stops = torch.tensor(stop_ids, device=device)
    rows = torch.arange(len(mask), device=device)  # original row of each sequence still running
    done = torch.zeros(len(mask), dtype=torch.bool, device=device)
    tokens = torch.full((len(mask), max_new_tokens), pad_id, dtype=torch.long, device=device)
    uniforms = None
    if sample_seeds is not None:
        if len(sample_seeds) != len(mask):
            raise ValueError(f"{len(sample_seeds)} sample seeds for {len(mask)} sequences.")
        uniforms = sample_uniforms(sample_seeds, max_new_tokens)
    for step in range(max_new_tokens):
        if uniforms is None:
            u = torch.rand(len(rows), dtype=torch.float64)
        else:
            u = uniforms[rows.cpu(), step]
        token = sampler.sample(logits, u).masked_fill(done, pad_id)
        tokens[rows, step] = token
        done |= torch.isin(token, stops)
        if done.all() or step == max_new_tokens - 1:
            break
        if 4 * int(done.sum()) >= len(done):
            # A quarter of the rows have stopped: drop them from the batch (and the cache)
            # instead of computing padding for them until the longest one ends.
            running = (~done).nonzero().squeeze(1)
            cache.batch_select_indices(running)
            rows, mask, positions = rows[running], mask[running], positions[running]
            token, done = token[running], done[running]
        mask = torch.cat([mask, torch.ones_like(token)[:, None]], dim=1)
        out = model(
            input_ids=token[:, None],
            attention_mask=mask,
            position_ids=positions,
            cache=cache,
            use_cache=True,
        )
        logits, positions = out.logits[:, -1].float(), positions + 1
    return [_until_stop(row, stop_ids) for row in tokens.tolist()]


def _until_stop(row: list[int], stop_ids: list[int]) -> list[int]:
    end = next((i for i, t in enumerate(row) if t in stop_ids), None)
    return row if end is None else row[: end + 1]


@torch.no_grad()
def generate_completions(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt_texts: list[str],
    config: SamplingSettings,
    batch_size: int | None = None,
    seeds: Sequence[int] | None = None,
) -> tuple[list[Completion], GenerationStats]:
    """Sample `num_generations` completions for each prompt; empty ones are dropped and counted.

    Args:
        model: the policy (a LoRA-wrapped model samples with its adapter on).
        tokenizer: its tokenizer; prompts are encoded with `superhf.batching.encode_prompt`.
        prompt_texts: the prompts as the policy continues them (`Prompt.text`).
        config: the sampling settings (`SuperHFConfig`, `EvalConfig`, any `SamplingSettings`).
        batch_size: most sequences per decode call (default `config.generation_batch_size`);
            below `num_generations` a prompt's samples are split over several calls (the
            trainer halves it after running out of memory).
        seeds: one per prompt: sample j of prompt i then draws from its own generator,
            seeded with `derive_seed(seeds[i], j)`, so its tokens do not depend on the batch
            (up to float rounding). Default: torch's global generator, batch by batch.

    Returns:
        (completions in prompt order, each with its text, sampled ids and whether it was
        clipped; `GenerationStats` with sampled-token count, empties dropped and seconds).

    Example:
        >>> completions, stats = generate_completions(model, tokenizer, ["Hi!"], SuperHFConfig())
        >>> completions[0].text, completions[0].token_ids[-1] == tokenizer.eos_token_id
    """
    start = time.perf_counter()
    n = config.num_generations
    stop_ids = stop_token_ids(model, tokenizer)
    # Temperature, top-k (0 = off) and top-p exactly as configured; transformers' `generate`
    # would silently add top_k=50.
    sampler = NucleusSampler(config.temperature, config.top_k, config.top_p)
    encoded = [encode_prompt(tokenizer, t) for t in prompt_texts]
    order = sorted(range(len(prompt_texts)), key=lambda i: len(encoded[i]))
    batch_size = batch_size or config.generation_batch_size
    if seeds is not None and len(seeds) != len(prompt_texts):
        raise ValueError(f"{len(seeds)} seeds for {len(prompt_texts)} prompts.")
    # Each call: (prompt indices, samples per prompt, index of the first sample).
    # Whole prompts share a call when they fit.
    if batch_size >= n:
        per_call = batch_size // n
        calls = [(order[i : i + per_call], n, 0) for i in range(0, len(order), per_call)]
    else:
        starts = range(0, n, batch_size)
        calls = [([i], min(batch_size, n - first), first) for i in order for first in starts]
    was_training = model.training
    model.eval()
    stats = GenerationStats()
    completions: list[Completion] = []
    for group, samples, first in calls:
        sample_seeds = None
        if seeds is not None:
            sample_seeds = [derive_seed(seeds[i], first + j) for i in group for j in range(samples)]
        new_tokens = sample_shared_prompts(
            model,
            [encoded[i] for i in group],
            samples,
            config.max_completion_length,
            sampler,
            stop_ids,
            tokenizer.pad_token_id,
            sample_seeds,
        )
        for row, token_ids in enumerate(new_tokens):
            completion = trim_completion(
                token_ids, stop_ids, config.stop_sequences, tokenizer, group[row // samples]
            )
            stats.num_sampled_tokens += completion.num_tokens
            if not completion.text.strip():
                stats.num_empty += 1
                continue
            completions.append(completion)
    model.train(was_training)
    completions.sort(key=lambda c: c.prompt_index)  # stable: sample order within a prompt kept
    stats.seconds = time.perf_counter() - start
    return completions, stats
