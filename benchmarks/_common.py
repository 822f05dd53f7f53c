"""Shared helpers of the benchmark scripts: synthetic data and one training step."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from moe_retriever.completion.base import Completion, CompletionContext, CompletionOutput
from moe_retriever.model import MultimodalClassifier

#: the reduced deep configuration every mfeat measurement uses, for time (docs/DEFAULTS.md
#: section 1: the library defaults take minutes per mfeat fit on 2 cores)
MFEAT_FAST: dict[str, Any] = {
    "model.n_tokens": 4,
    "model.dim": 64,
    "train.batch_size": 64,
    "train.epochs": 15,
    "train.warmup_epochs": 3,
    "train.patience": 5,
}


def count_cpu_attention_flops() -> None:
    """Teach ``torch.utils.flop_counter`` the CPU fused attention kernels.

    torch counts the CUDA flash / efficient / cuDNN attention ops but registers no formula for
    ``aten._scaled_dot_product_flash_attention_for_cpu`` (and its backward), so on CPU every
    attention score is counted as 0 FLOPs. This registers torch's own SDPA formulas for them
    (idempotent)."""
    from torch.utils import flop_counter as fc

    aten = torch.ops.aten
    fwd = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    bwd = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None)
    if fwd is not None and fwd not in fc.flop_registry:

        @fc.register_flop_formula(fwd)
        def _fwd(q: Any, k: Any, v: Any, *args: Any, out_shape: Any = None, **kw: Any) -> int:
            return int(fc.sdpa_flop_count(q, k, v))

    if bwd is not None and bwd not in fc.flop_registry:

        @fc.register_flop_formula(bwd)
        def _bwd(
            g: Any, q: Any, k: Any, v: Any, *args: Any, out_shape: Any = None, **kw: Any
        ) -> int:
            return int(fc.sdpa_backward_flop_count(g, q, k, v))


def synthetic(
    n: int,
    dims: list[int],
    missing_rate: float,
    n_classes: int = 4,
    seed: int = 0,
    device: str = "cpu",
) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """Class-dependent Gaussian features per modality; each (sample, modality) pair missing
    with probability ``missing_rate`` (MCAR), keeping at least one modality per sample.
    Unobserved rows are zeros (the model's input convention)."""
    g = torch.Generator().manual_seed(seed)
    M = len(dims)
    y = torch.randint(0, n_classes, (n,), generator=g)
    obs = torch.rand(n, M, generator=g) >= missing_rate
    empty = ~obs.any(1)
    obs[empty, torch.randint(0, M, (int(empty.sum()),), generator=g)] = True
    x = {}
    for j, d in enumerate(dims):
        centers = torch.randn(n_classes, d, generator=g)
        v = centers[y] + 2.0 * torch.randn(n, d, generator=g)
        x[f"m{j}"] = (v * obs[:, j, None]).to(device)
    return x, obs.to(device), y.to(device)


class LoopCompletion(Completion):
    """Adapter: the same retriever, called once per missing (sample, modality) pair."""

    name = "loop-adapter"  # not registered

    def __init__(self, inner: Any) -> None:
        super().__init__(inner.modalities, inner.n_tokens, inner.dim)
        self.inner = inner
        self.needs_pool = inner.needs_pool  # type: ignore[misc]

    def complete(
        self, tokens: torch.Tensor, observed: torch.Tensor, context: CompletionContext
    ) -> CompletionOutput:
        return self.inner.complete_loop(tokens, observed, context)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def make_step(
    model: MultimodalClassifier,
    opt: torch.optim.Optimizer,
    x: dict[str, torch.Tensor],
    obs: torch.Tensor,
    y: torch.Tensor,
    batch: int,
    device: str,
    seed: int = 0,
    autocast_dtype: torch.dtype | None = None,
) -> Callable[[bool], float]:
    """A closure running one full training step (forward, backward, Adam) on a random batch;
    returns its wall time in seconds. ``autocast_dtype`` (e.g. ``torch.bfloat16``): the
    forward runs under ``torch.autocast`` (mixed precision; weights and optimizer stay
    float32)."""
    g = torch.Generator().manual_seed(seed)
    n = obs.shape[0]
    device_type = torch.device(device).type

    def step(retrieve: bool) -> float:
        idx = torch.randint(0, n, (batch,), generator=g).to(device)
        xb = {m: v[idx] for m, v in x.items()}
        sync(device)
        t0 = time.perf_counter()
        with torch.autocast(device_type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            out = model(xb, obs[idx], idx, retrieve=retrieve)
            loss = F.cross_entropy(out.logits.float(), y[idx]) + out.aux_loss.float()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sync(device)
        return time.perf_counter() - t0

    return step


# ---------------------------------------------------------------- the cost knobs of a model
#: ModelConfig fields the speed benchmarks take as flags (``--n-tokens`` ...), default: the
#: library's ``ModelConfig()``
MODEL_KNOBS: tuple[str, ...] = (
    "n_tokens",
    "dim",
    "encoder",
    "encoder_hidden",
    "n_heads",
    "head_hidden",
    "retrieval_dropout",
)
#: options of the moe-retriever completion taken as flags (``--support-k`` is its ``k``),
#: default: the moe-retriever preset's (its options over the class's signature defaults)
RETRIEVER_KNOBS: tuple[str, ...] = (
    "k",
    "support_select",
    "n_candidates",
    "n_shared",
    "top_k",
    "expert_hidden",
)


def retriever_defaults() -> dict[str, Any]:
    """The moe-retriever completion's options as the library builds it by default: the
    ``moe-retriever`` preset's completion options over ``MoERetrieverCompletion``'s own
    signature defaults (read, not copied, so a change of either shows here)."""
    import inspect

    from moe_retriever.completion.moe_retriever import MoERetrieverCompletion
    from moe_retriever.presets import get_preset

    sig = inspect.signature(MoERetrieverCompletion.__init__)
    out = {
        name: p.default
        for name, p in sig.parameters.items()
        if name in RETRIEVER_KNOBS and p.default is not inspect.Parameter.empty
    }
    out.update(
        {k: v for k, v in get_preset("moe-retriever").completion_options.items() if k in out}
    )
    return out


def add_model_args(p: Any) -> None:
    """``--n-tokens``, ``--dim``, ... (MODEL_KNOBS) and ``--support-k``, ``--n-candidates``,
    ... (RETRIEVER_KNOBS) on an argparse parser, each defaulting to the library's value."""
    from moe_retriever.architecture import ModelConfig

    cfg = ModelConfig()
    for name in MODEL_KNOBS:
        value = getattr(cfg, name)
        p.add_argument(
            "--" + name.replace("_", "-"),
            type=type(value),
            default=value,
            help=f"ModelConfig.{name} (default: the library's, {value})",
        )
    for name, value in retriever_defaults().items():
        flag = "--support-k" if name == "k" else "--" + name.replace("_", "-")
        p.add_argument(
            flag,
            dest="retriever_" + name,
            type=_none_or(int) if name in ("k", "expert_hidden") else type(value),
            default=value,
            help=f"moe-retriever completion option {name} (default: the library's, {value})",
        )


def _none_or(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        return None if text.lower() in ("none", "null") else kind(text)

    return parse


def model_settings(args: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """(ModelConfig overrides, moe-retriever options) from ``add_model_args``' flags."""
    model = {name: getattr(args, name) for name in MODEL_KNOBS}
    retriever = {name: getattr(args, "retriever_" + name) for name in retriever_defaults()}
    return model, retriever
