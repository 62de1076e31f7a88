"""One SuperHF run over many processes (DDP or FSDP2 through accelerate), equal to the
one-process run.

    accelerate launch --config_file configs/accelerate/ddp.yaml -m superhf train --config C.yaml
    accelerate launch --config_file configs/accelerate/fsdp.yaml -m superhf train --config C.yaml
    torchrun --nproc_per_node 2 -m superhf train --config C.yaml

How the work is split (README, "Many GPUs and nodes"):
- Sampling and scoring: each iteration's prompts are cut into contiguous blocks, whole prompts
  per process; a process samples its block (each prompt from its own seed, `prompt_seeds`) and
  scores it with its own reward copy. The completions and scores are then gathered, so every
  process holds the iteration's samples in the one-process order and keeps the same top-K.
- Fine-tuning: a global minibatch is `per_device_train_batch_size x num_processes` kept
  samples, taken in the one-process order; each process trains on its slice. The token-mean
  CE is divided by the minibatch's global token count, and the loss multiplied by the number
  of processes (DDP averages gradients), so the update is the one-process update over the same
  samples with `per_device_train_batch_size x num_processes` (up to float rounding).
- Agreement: a step's pieces run under `no_sync`; then one all-reduce carries every process's
  out-of-memory and non-finite flags and its loss statistics; only if all is well does a tiny
  synchronised backward make DDP average the gradients. So an out-of-memory on one process
  halves the micro-batch on all of them, never leaving one waiting in a collective.
- FSDP2 (`Processes.sharded`): every forward and backward of the policy is a collective. Each
  process samples and evaluates from a whole copy (`SamplingModel`, gathered before each
  use); in fine-tuning a process with fewer pieces runs idle passes until all ran as many;
  gradients are reduced in each backward (no `no_sync`), and out of memory there stops the
  run (it cannot be agreed mid-collective). Checkpoints hold whole tensors.
- Faults: every collective has `ddp_timeout` seconds; a peer that died or timed out becomes
  a TrainingError naming the fix (`--resume`). SIGINT/SIGTERM are agreed once per iteration.

With one process every function here is the identity and no collective runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
import os
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from accelerate import Accelerator
from accelerate.utils import (
    DistributedDataParallelKwargs,
    DistributedType,
    FullyShardedDataParallelPlugin,
    InitProcessGroupKwargs,
)

from superhf.config import SuperHFConfig
from superhf.errors import ConfigError, TrainingError
from superhf.generation import Completion, GenerationStats, derive_seed
from superhf.rewards.scoring import Scores

T = TypeVar("T")
R = TypeVar("R")  # a training row
C = TypeVar("C")  # what a minibatch's rows count to
"""A training example: (prompt ids, completion ids)."""


def make_accelerator(args: SuperHFConfig) -> Accelerator:
    """The run's Accelerator: CPU when no GPU is present (gloo across CPU processes), an
    `args.ddp_timeout` limit on every collective, and DDP without per-forward buffer broadcasts
    (a forward then runs no collective, so processes may run different numbers of them).

    FSDP2 (`accelerate launch` with an FSDP config, `fsdp_version: 2`) shards the policy. On a
    machine without a GPU accelerate runs FSDP nowhere (it picks gloo DDP), although FSDP2
    itself works over gloo: there the FSDP plugin is put back by hand, which is how the CPU
    tests and `configs/accelerate/fsdp_cpu_2proc.yaml` run it."""
    gpu = torch.cuda.is_available()
    timeout_s = args.ddp_timeout or (1800 if gpu else 300)
    # torch renamed broadcast_buffers (same meaning); accelerate's handler only knows the old name
    warnings.filterwarnings("ignore", message="`broadcast_buffers` is deprecated")
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
        raise ConfigError(
            "accelerate's DeepSpeed is not supported by superhf train yet (it was never run: "
            "no GPU was at hand). Launch with FSDP2 (configs/accelerate/fsdp.yaml) to shard "
            "the model, or DDP (configs/accelerate/ddp.yaml); README, 'Many GPUs and nodes'."
        )
    fsdp = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    if fsdp and os.environ.get("FSDP_VERSION", "1") != "2":
        raise ConfigError(
            "superhf train runs FSDP2 only: set `fsdp_version: 2` in the accelerate config's "
            "fsdp_config (configs/accelerate/fsdp.yaml)."
        )
    accelerator = Accelerator(
        cpu=not gpu,
        mixed_precision="bf16" if args.bf16 else "no",
        log_with=args.report_to or None,
        project_dir=args.output_dir,
        kwargs_handlers=[
            InitProcessGroupKwargs(timeout=datetime.timedelta(seconds=timeout_s)),
            DistributedDataParallelKwargs(broadcast_buffers=False),
        ],
    )
    if fsdp and not gpu and accelerator.distributed_type == DistributedType.MULTI_CPU:
        accelerator.state.distributed_type = DistributedType.FSDP
        accelerator.state.fsdp_plugin = FullyShardedDataParallelPlugin()  # from the launch env
    return accelerator


def is_out_of_memory(err: BaseException) -> bool:
    """A CUDA out-of-memory error, or the CPU allocator's (not one of ours that names it)."""
    message = str(err).lower()
    return isinstance(err, torch.OutOfMemoryError) or (
        isinstance(err, RuntimeError)
        and not isinstance(err, TrainingError)
        and ("out of memory" in message or "can't allocate memory" in message)
    )


class OutOfMemoryElsewhere(RuntimeError):
    """Raised on every process when any of them ran out of memory in an agreed step; its
    message contains "out of memory", so `OutOfMemoryBackoff` (`train/update.py`) halves the
    size everywhere."""


class Processes:
    """The processes of one run: sharding, gathering and agreement (identity with one)."""

    def __init__(self, accelerator: Accelerator, output_dir: str):
        self.accelerator = accelerator
        self.output_dir = output_dir
        self.rank = accelerator.process_index
        self.size = accelerator.num_processes
        self.sharded = getattr(accelerator, "distributed_type", None) == DistributedType.FSDP
        """FSDP2: every forward and backward of the policy is a collective, so every process
        must run as many of them, in the same order."""

    # --- sharding --------------------------------------------------------------------------
    def block(self, count: int) -> range:
        """This process's contiguous block of `count` items (the first blocks one longer)."""
        base, extra = divmod(count, self.size)
        start = self.rank * base + min(self.rank, extra)
        return range(start, start + base + (self.rank < extra))

    def map_blocks(self, items: Sequence[Any], run: Callable[[list[Any], int], T]) -> list[T]:
        """`run(this process's block, its first index)` on every process, gathered in rank
        order (so concatenating the blocks' results gives the one-process order)."""
        block = self.block(len(items))
        return self.gather(run([items[i] for i in block], block.start))

    def minibatches(
        self, rows: list[R], per_device: int, count: Callable[[list[R]], C]
    ) -> list[tuple[list[R], C, int]]:
        """(this process's slice, `count` of the whole global minibatch, its number of rows) of
        each global minibatch of `per_device x num_processes` rows, in the one-process order.
        A slice may be empty (a short last minibatch); `count` gives what the losses divide by
        (the completion-token counts), the same on every process."""
        size = per_device * self.size
        out = []
        for start in range(0, len(rows), size):
            whole = rows[start : start + size]
            block = self.block(len(whole))
            out.append(([whole[i] for i in block], count(whole), len(whole)))
        return out

    def gather_samples(
        self, first: int, completions: list[Completion], stats: GenerationStats | None = None
    ) -> tuple[list[Completion], GenerationStats | None]:
        """Every process's completions (their `prompt_index` moved from the block starting at
        `first` to the whole list), in prompt order; the sampling statistics added up (the
        slowest process's seconds)."""
        if self.size == 1:
            return completions, stats
        moved = [dataclasses.replace(c, prompt_index=c.prompt_index + first) for c in completions]
        everything = self.gather(moved)
        if stats is None:
            return everything, None
        parts = self.all_ranks(stats)
        total = GenerationStats(
            num_sampled_tokens=sum(p.num_sampled_tokens for p in parts),
            num_empty=sum(p.num_empty for p in parts),
            seconds=max(p.seconds for p in parts),
        )
        return everything, total

    def gather_scores(self, scores: Scores | None) -> Scores | None:
        """Every process's scores, concatenated in rank order (None stays None)."""
        if self.size == 1 or scores is None:
            return scores
        parts = self.all_ranks(scores)
        per_func = {name: [x for p in parts for x in p.per_func[name]] for name in scores.per_func}
        return Scores([x for p in parts for x in p.total], per_func)

    # --- collectives -----------------------------------------------------------------------
    def _collective(self, what: str, run: Callable[[], T]) -> T:
        try:
            return run()
        except RuntimeError as err:  # gloo/NCCL: a peer closed its connection, or timed out
            raise TrainingError(
                f"process {self.rank} of {self.size} lost contact with the others while "
                f"{what} ({type(err).__name__}: {str(err).splitlines()[0][:200]}). Another "
                "process was killed or failed (its own error says why); every process stops. "
                f"Continue with: superhf train --resume {self.output_dir} (on {self.size} "
                "processes)."
            ) from err

    def gather(self, local: list[T]) -> list[T]:
        """Every process's list, concatenated in rank order, on every process."""
        if self.size == 1:
            return list(local)
        parts: list[Any] = [None] * self.size
        self._collective("gathering results", lambda: dist.all_gather_object(parts, local))
        return [x for part in parts for x in part]

    def all_ranks(self, obj: T) -> list[T]:
        """One object from each process, in rank order, on every process."""
        if self.size == 1:
            return [obj]
        parts: list[Any] = [None] * self.size
        self._collective("gathering states", lambda: dist.all_gather_object(parts, obj))
        return parts

    def sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sums over processes (float64)."""
        if self.size == 1:
            return [float(v) for v in values]
        tensor = torch.tensor(values, dtype=torch.float64, device=self.accelerator.device)
        self._collective("adding up statistics", lambda: dist.all_reduce(tensor))
        return tensor.tolist()

    def max(self, value: int) -> int:
        return int(max(self.all_ranks(value)))

    def min(self, value: int) -> int:
        return int(min(self.all_ranks(value)))

    def barrier(self, what: str) -> None:
        if self.size > 1:
            self._collective(what, self.accelerator.wait_for_everyone)

    def sync_gradients(self, model: torch.nn.Module, token_id: int) -> None:
        """Make DDP average the gradients accumulated under `no_sync`: one synchronised
        backward of a zero loss on a single token (it adds nothing to any gradient)."""
        if self.size == 1 or self.sharded:  # FSDP reduces the gradients in every backward
            return
        ids = torch.tensor([[token_id]], device=self.accelerator.device)

        def run() -> None:
            with self.accelerator.autocast():
                logits = model(input_ids=ids).logits
            self.accelerator.backward(logits.float().sum() * 0.0)

        self._collective("averaging gradients", run)

    def finish(self) -> None:
        """Wait for every process, then leave the process group (clean exits for gloo/NCCL)."""
        if self.size > 1 and dist.is_initialized():
            self.barrier("finishing")
            dist.destroy_process_group()

    def exit(self, code: int) -> None:
        """After `finish`: end this process with `code` without Python's shutdown (with one
        process, return and let Python end as usual).

        The policy's DDP reducer or FSDP2 device mesh keeps the process group, and so gloo's
        worker threads, alive past `destroy_process_group`. A worker that drops its last
        finished collective after Python began finalizing needs the GIL, cannot take it, and
        the process aborts (SIGABRT, "terminate called without an active exception") after a
        run that succeeded (docs/DISTRIBUTED.md). Everything is written by now; flush, leave."""
        if self.size == 1:
            return
        sys.stdout.flush()
        sys.stderr.flush()
        logging.shutdown()
        os._exit(code)


def prompt_seeds(seed: int, iteration: int | str, first: int, count: int) -> list[int]:
    """The sampling seeds of `count` prompts from position `first` of an iteration's prompts
    (or of the held-out prompts, iteration "eval"): a prompt's samples depend on the run's
    seed, the iteration and its position, never on its process or batch."""
    return [derive_seed(seed, iteration, first + i) for i in range(count)]


@contextlib.contextmanager
def on_stop_signals(handler: Callable[[int], None]) -> Iterator[None]:
    """Inside, SIGINT and SIGTERM call `handler(signum)` instead of stopping the process; the
    earlier handlers come back after. Off the main thread (where Python sets no handlers) it
    changes nothing. The trainer agrees on a signal across processes once per iteration."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_signal(signum: int, frame: Any) -> None:
        handler(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
