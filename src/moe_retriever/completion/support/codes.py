"""Bit codes of observed combinations and the counter-based hash behind evaluation draws.

An observed combination O of at most ``MAX_MODALITIES`` modalities is an int64 bitmask (bit j
set when modality j is observed). Pools, similar selection and the completion methods all
index combinations by these codes. ``hash_uniform`` turns integer keys (seed, sample key,
target, draw number, slot...) into uniforms, so evaluation draws depend on no RNG state.
"""

from __future__ import annotations

import torch
from torch import Tensor

_MASK31 = (1 << 31) - 1
MAX_MODALITIES = 40


def _mix31(x: Tensor) -> Tensor:
    """A 31-bit integer hash (xorshift-multiply), int64 arithmetic without overflow."""
    x = (((x >> 16) ^ x) * 0x45D9F3B) & _MASK31
    x = (((x >> 16) ^ x) * 0x45D9F3B) & _MASK31
    return (x >> 16) ^ x


def hash_uniform(*parts: Tensor) -> Tensor:
    """Deterministic float64 uniforms in [0, 1) from int64 tensors (broadcast together)."""
    h = torch.zeros((), dtype=torch.long, device=parts[0].device)
    for i, p in enumerate(parts):
        p = p.long()
        lo, hi = p & _MASK31, (p >> 31) & _MASK31
        h = _mix31(h ^ _mix31(lo + 0x2545F49 * (i + 1)))
        h = _mix31(h ^ _mix31(hi + 0x1B873593))
    return h.double() / float(1 << 31)


def combination_codes(observed: Tensor) -> Tensor:
    """(N, M) bool -> (N,) int64 bitmask, bit j set when modality j is observed."""
    M = observed.shape[1]
    if M > MAX_MODALITIES:
        raise ValueError(f"at most {MAX_MODALITIES} modalities are supported, got {M}")
    weights = torch.ones(M, dtype=torch.long, device=observed.device) << torch.arange(
        M, device=observed.device
    )
    return (observed.long() * weights).sum(dim=1)


def code_bits(codes: Tensor, n_modalities: int) -> Tensor:
    """(n,) int64 bitmask codes -> (n, M) int64 0/1, column j = bit j (modality j observed)."""
    return (codes[:, None] >> torch.arange(n_modalities, device=codes.device)) & 1


def pack_bits(bits: Tensor) -> Tensor:
    """(R, C) bool -> (R, ceil(C / 64)) int64 words, bit b of word w = column w * 64 + b."""
    R, C = bits.shape
    W = (C + 63) // 64
    padded = torch.zeros(R, W * 64, dtype=torch.long, device=bits.device)
    padded[:, :C] = bits.long()
    shifts = torch.arange(64, device=bits.device)
    # distinct powers of two: the sum is the OR (bit 63 wraps to the sign bit, as intended)
    return (padded.reshape(R, W, 64) << shifts).sum(-1)
