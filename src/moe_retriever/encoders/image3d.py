"""A 3-D CNN encoder for masked voxel vectors (the ADNI MRI modality), registered as ``cnn3d``.

The authors' image preprocessing keeps only the gray-matter voxels of each scan: a row of
``ADNI_G.npy`` is the vector of voxels where the template (``..._muse_seg_DS222.nii.gz``, a
91 x 109 x 91 volume) is labelled 150. :class:`Volume3DEncoder` scatters such a vector back into
its volume (zeros outside the mask), runs a small 3-D CNN on it (``blocks`` blocks of
Conv3d -> GroupNorm -> GELU -> MaxPool3d, channels doubling from ``channels``), pools the
feature map adaptively to a grid of exactly P cells and projects each cell's channels to width
D: P tokens of width D, like every encoder. Use it for a modality by config::

    model:
      encoders:
        image:
          name: cnn3d
          mask: /data/adni/image/BLSA_SPGR+MPRAGE_averagetemplate_muse_seg_DS222.nii.gz

The mask is one of: ``mask`` = a ``.npy`` boolean volume, or a NIfTI template (``.nii`` /
``.nii.gz``, voxels equal to ``mask_label``; reading it needs nibabel:
``pip install 'moe-retriever[imaging]'``); or ``volume`` = the shape of a volume whose voxels
are all kept (then ``in_dim`` must be its size). The voxel order is C order (``ravel()``), as
in the authors' code.

Memory: each activation of the first block holds ``batch x channels x volume`` floats (at the
defaults and the full ADNI volume, 16 x 8 x 902,629 x 4 bytes = 462 MB, a few of them live at
once in training); lower ``train.batch_size`` or ``channels`` on small devices.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from moe_retriever.encoders.base import register_encoder

__all__ = ["OptionalDependencyError", "Volume3DEncoder", "load_mask", "token_grid"]


class OptionalDependencyError(ImportError, ValueError):
    """An optional package is needed for what was asked (a ValueError too, so the command line
    prints it as one line)."""


def load_mask(mask: str = "", mask_label: int = 150, volume: list[int] | None = None) -> np.ndarray:
    """The boolean 3-D mask named by an encoder's options (see the module docstring)."""
    if bool(mask) == bool(volume):
        raise ValueError(
            "cnn3d needs exactly one of the options 'mask' (a .npy boolean volume or a NIfTI "
            "template) and 'volume' (the shape of an all-kept volume), got "
            f"mask={mask!r}, volume={volume!r}"
        )
    if volume:
        shape = tuple(int(v) for v in volume)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"cnn3d option volume must be 3 positive sizes, got {list(volume)}")
        return np.ones(shape, dtype=bool)
    path = Path(mask)
    if not path.is_file():
        raise FileNotFoundError(f"cnn3d mask: no file {str(path)!r}")
    name = path.name.lower()
    if name.endswith(".npy"):
        arr = np.load(path, allow_pickle=False)
        if arr.ndim != 3:
            raise ValueError(f"cnn3d mask {str(path)!r}: expected a 3-D volume, got {arr.shape}")
        return arr.astype(bool) if arr.dtype == bool else arr == mask_label
    if name.endswith((".nii", ".nii.gz")):
        try:
            import nibabel
        except ImportError:
            raise OptionalDependencyError(
                f"cnn3d mask {str(path)!r} is a NIfTI file: reading it needs nibabel, "
                "pip install 'moe-retriever[imaging]' (or give the mask as a .npy volume)"
            ) from None
        image: Any = nibabel.load(str(path))
        data = np.asarray(image.get_fdata(dtype=np.float32))
        if data.ndim != 3:
            raise ValueError(f"cnn3d mask {str(path)!r}: expected a 3-D volume, got {data.shape}")
        return data == mask_label
    raise ValueError(f"cnn3d mask {str(path)!r}: expected a .npy, .nii or .nii.gz file")


def token_grid(n_tokens: int) -> tuple[int, int, int]:
    """Three sizes whose product is ``n_tokens``, as even as its prime factors allow."""
    factors: list[int] = []
    n, p = int(n_tokens), 2
    while n > 1:
        while n % p == 0:
            factors.append(p)
            n //= p
        p += 1
    grid = [1, 1, 1]
    for f in sorted(factors, reverse=True):  # largest factor to the smallest axis so far
        grid[int(np.argmin(grid))] *= f
    return (grid[0], grid[1], grid[2])


@register_encoder
class Volume3DEncoder(nn.Module):
    """Masked voxels (B, F) -> volume (B, 1, X, Y, Z) -> 3-D CNN -> P x D tokens."""

    name = "cnn3d"

    def __init__(
        self,
        in_dim: int,
        n_tokens: int,
        dim: int,
        mask: str = "",
        mask_label: int = 150,
        volume: list[int] | None = None,
        channels: int = 8,
        blocks: int = 3,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if in_dim < 1 or n_tokens < 1 or dim < 1 or channels < 1 or blocks < 1:
            raise ValueError(
                f"cnn3d needs positive sizes, got in_dim={in_dim}, n_tokens={n_tokens}, "
                f"dim={dim}, channels={channels}, blocks={blocks}"
            )
        keep = load_mask(mask, mask_label, volume)
        if int(keep.sum()) != in_dim:
            nifti = mask.lower().endswith((".nii", ".nii.gz"))
            where = f"mask {mask!r}" + (f" (label {mask_label})" if nifti else "")
            where = where if mask else f"volume {list(volume or [])}"
            raise ValueError(
                f"cnn3d: the {where} keeps {int(keep.sum())} voxels but the modality has "
                f"{in_dim} features; the mask must be the one the voxel vectors were cut with"
            )
        self.in_dim, self.n_tokens, self.dim = in_dim, n_tokens, dim
        self.shape = tuple(int(s) for s in keep.shape)
        self.register_buffer(
            "voxels", torch.from_numpy(np.flatnonzero(keep.ravel())), persistent=False
        )
        layers: list[nn.Module] = []
        c_in, size = 1, list(self.shape)
        for b in range(blocks):
            c_out = channels * 2**b
            layers += [
                nn.Conv3d(c_in, c_out, kernel_size=3, padding=1),
                nn.GroupNorm(min(4, c_out), c_out),
                nn.GELU(),
            ]
            if min(size) >= 2:  # pool while every side can still halve
                layers.append(nn.MaxPool3d(2))
                size = [s // 2 for s in size]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.grid = token_grid(n_tokens)
        self.pool = nn.AdaptiveAvgPool3d(self.grid)
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(c_in, dim)

    def to_volume(self, x: Tensor) -> Tensor:
        """(B, F) voxel vectors -> (B, 1, X, Y, Z) volumes, zeros outside the mask."""
        vol = x.new_zeros(x.shape[0], int(np.prod(self.shape)))
        voxels: Tensor = self.voxels  # type: ignore[assignment]
        vol[:, voxels] = x
        return vol.reshape(x.shape[0], 1, *self.shape)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 2 or x.shape[-1] != self.in_dim:
            raise ValueError(
                f"cnn3d expects (B, {self.in_dim}) voxel vectors, got {tuple(x.shape)}"
            )
        h = self.pool(self.features(self.to_volume(x)))  # (B, C, g1, g2, g3)
        h = h.flatten(2).transpose(1, 2)  # (B, P, C)
        return self.proj(self.dropout(h))
