"""The model that samples: the policy itself, or a merged copy of it in a faster dtype.

Sampling is most of an iteration, and on hardware with native bf16 (CPUs with `avx512_bf16`
or AMX, most GPUs) a bf16 forward pass is about twice as fast as fp32. The policy trains in
its own dtype; for sampling, `SamplingModel` keeps a plain copy of it in the sampling dtype,
with the LoRA adapter merged into the weights (one matmul per layer instead of three), and
refreshes it after every update. Only which samples are drawn changes: the loss and the KL
are computed by the policy, in its dtype, on the ids that were sampled. bf16 shifts the
next-token distribution slightly (measured by `bench/bench_sampling.py`: bench/README.md).

    config.sampling_dtype = "auto"   # bf16 where the device has native bf16, else the policy's

A LoRA policy samples from a merged copy in its own dtype too (`merge_adapter_for_sampling`,
on by default): peft runs each adapted projection as three matmuls and a few small ops, which
at decoding's few rows per step cost about a quarter of an fp32 step on a 2-core CPU.

Under FSDP2 the policy's weights are sharded across processes and every forward of it is a
collective; the copy is then made whatever the dtype (`always_copy`), whole on every process,
so each process samples alone, as many tokens as its prompts need (as TRL's colocated vLLM
engine holds a whole copy beside a sharded trainer).
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
from torch.distributed.tensor import DTensor
from transformers import AutoModelForCausalLM, PreTrainedModel


@functools.cache
def native_bf16(device_type: str = "cpu") -> tuple[bool, str]:
    """Whether `device_type` computes bf16 natively, and the evidence, read at run time."""
    if device_type == "cuda":
        ok = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return ok, f"torch.cuda.is_bf16_supported() = {ok}"
    if device_type != "cpu":
        return False, f"no bf16 detection for device type {device_type!r}"
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        return False, "no /proc/cpuinfo to read the CPU's flags from"
    flags: set[str] = set()
    for line in cpuinfo.read_text().splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    found = sorted(flags & {"avx512_bf16", "amx_bf16"})
    if found:
        return True, f"CPU flags {', '.join(found)}"
    return False, "CPU has neither avx512_bf16 nor amx_bf16 (bf16 would be emulated, slower)"


def resolve_sampling_dtype(
    setting: str, policy_dtype: torch.dtype, device_type: str
) -> torch.dtype:
    """The dtype to sample in: `setting` itself, or for "auto" bf16 where native, else the
    policy's."""
    if setting != "auto":
        return getattr(torch, setting)
    return torch.bfloat16 if native_bf16(device_type)[0] else policy_dtype


def full_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """The whole of a tensor FSDP2 sharded (an all-gather: every process must call it, in the
    same order), else the tensor itself."""
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def merged_weights(policy: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The policy's weights with its active LoRA adapters added in, named as in the plain
    model (no `base_layer`, no `lora_` tensors); a model without adapters: its own weights.
    Sharded weights stay sharded (`full_tensor` gathers them)."""
    base = policy.get_base_model() if hasattr(policy, "get_base_model") else policy
    weights: dict[str, torch.Tensor] = {}
    for name, module in base.named_modules():
        if hasattr(module, "get_delta_weight") and hasattr(module, "base_layer"):
            delta = sum(module.get_delta_weight(a) for a in module.active_adapters)
            weights[f"{name}.weight"] = module.base_layer.weight + delta
    for name, tensor in base.state_dict().items():
        if "lora_" not in name:
            weights.setdefault(name.replace(".base_layer.", "."), tensor)
    return weights


def changing_weights(policy: torch.nn.Module) -> set[str]:
    """Names (as in `merged_weights`) of the weights training can change: those an adapter is
    merged into, and trainable ones. A LoRA policy's other weights are frozen."""
    base = policy.get_base_model() if hasattr(policy, "get_base_model") else policy
    names = {
        f"{name}.weight"
        for name, module in base.named_modules()
        if hasattr(module, "get_delta_weight") and hasattr(module, "base_layer")
    }
    for name, param in base.named_parameters():
        if param.requires_grad and "lora_" not in name:
            names.add(name.replace(".base_layer.", "."))
    return names


def onednn_bf16_linear() -> bool:
    """Whether this torch can run bf16 linears through oneDNN with prepacked weights."""
    mkldnn = torch.ops.mkldnn
    return (
        torch.backends.mkldnn.is_available()
        and all(hasattr(mkldnn, op) for op in ("_reorder_linear_weight", "_linear_pointwise"))
        and bool(mkldnn._is_mkldnn_bf16_supported())
    )


class PackedLinear(torch.nn.Linear):
    """A bf16 CPU linear that multiplies by a copy of its weight prepacked in oneDNN's blocked
    layout, as torch.compile's CPU freezing does.

    `F.linear` in bf16 hands oneDNN the plain weight and oneDNN reorders it at every call; at
    decoding's 32 rows that is about half of each projection's time (2 cores with AMX:
    576 x 1536 in 70 -> 37 us, bench/README.md) and the whole sampling loop 1.23x faster, with
    the same tokens on SmolLM2-135M (other shapes may sum in another order: bf16 rounding).
    The plain `weight` stays (the sampling copy's refresh writes into
    it); `repack` must follow every write. Costs one more copy of the weights.
    """

    ROWS_HINT = 32  # the batch size oneDNN picks the layout for; any number of rows works

    def __init__(self, linear: torch.nn.Linear):
        torch.nn.Module.__init__(self)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias
        self.repack()

    @torch.no_grad()
    def repack(self) -> None:
        self.packed = torch.ops.mkldnn._reorder_linear_weight(self.weight, self.ROWS_HINT)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")


def pack_linears(model: torch.nn.Module) -> list[PackedLinear]:
    """Replace every `nn.Linear` of `model` by a `PackedLinear` sharing its parameters (so
    parameter names, and tied weights, are unchanged)."""
    packed: list[PackedLinear] = []
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if type(child) is torch.nn.Linear:
                packed.append(PackedLinear(child))
                setattr(module, child_name, packed[-1])
    return packed


class SamplingModel:
    """What `generate_completions` samples from: the policy, or its merged copy in `dtype`.

    With the policy's own dtype there is no copy (no extra memory, nothing to refresh), unless
    `always_copy` (a sharded policy, or a LoRA policy whose adapter is merged for speed).
    Otherwise the copy is built once from the policy's config
    and `refresh` writes the policy's current (merged) weights into it; the trainer calls it
    before every sampling. With a sharded policy `refresh` is a collective.
    """

    def __init__(self, policy: PreTrainedModel, dtype: torch.dtype, always_copy: bool = False):
        self.policy, self.dtype = policy, dtype
        self.copy: PreTrainedModel | None = None
        self._changing: set[str] | None = None  # None: copy every weight
        self._packed: list[PackedLinear] = []
        if always_copy or dtype != next(policy.parameters()).dtype:
            base = policy.get_base_model() if hasattr(policy, "get_base_model") else policy
            copy = AutoModelForCausalLM.from_config(base.config, dtype=dtype)
            copy.generation_config = base.generation_config
            self.copy = copy.to(next(policy.parameters()).device).eval().requires_grad_(False)
            on_cpu = next(policy.parameters()).device.type == "cpu"
            if dtype == torch.bfloat16 and on_cpu and onednn_bf16_linear():
                # fp32 gains only 1.04x there, and oneDNN's fp32 sums round differently
                self._packed = pack_linears(self.copy)
            self.refresh()

    @torch.no_grad()
    def refresh(self) -> None:
        """Copy the policy's current weights, adapters merged, into the sampling copy: all of
        them the first time, then only those training can change (`changing_weights`: with
        LoRA on q/k/v/o of SmolLM2-135M a fifth of them)."""
        if self.copy is None:
            return
        weights = merged_weights(self.policy)
        written = set()
        for name, param in self.copy.named_parameters():
            if self._changing is None or name in self._changing:
                param.copy_(full_tensor(weights[name]))
                written.add(id(param))
        for linear in self._packed:
            if id(linear.weight) in written:  # by identity: a tied LM head has no name here
                linear.repack()
        self._changing = changing_weights(self.policy)

    @property
    def model(self) -> PreTrainedModel:
        return self.policy if self.copy is None else self.copy
