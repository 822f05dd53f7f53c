"""A modality kept on disk: rows of a memory-mapped ``.npy`` picked per sample, read on demand.

The ADNI image modality is one row of ~200,000 gray-matter voxels per scan; 10,000 scans are
8 GB of float32, more than a training machine should hold for one modality. :class:`MappedRows`
stands in for the (N, F) array of such a modality in :class:`~moe_retriever.data.core.
MultimodalData`: it keeps the memory map (``np.load(path, mmap_mode="r")``) and, per sample,
the row of the file that holds it (``-1``: no row, the modality is missing, the row reads as
NaN). Subsets, hiding entries, preprocessing and batching make new small index/transform
objects; values are only read for the rows a batch asks for (:meth:`MappedRows.gather`) or
chunk by chunk for statistics (:meth:`MappedRows.chunks`).

Reads go through ``os.pread`` on the file rather than through the mapping, so the pages read
are the kernel's page cache and never count as this process's resident memory: peak memory of
a full pass is one chunk, whatever the file size (``benchmarks/layout_memory.py`` measures it).

Anything that needs a real array can still have one: ``np.asarray(rows)`` reads every row
(use it for small data only; the fixtures of the tests do).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any, TypeGuard

import numpy as np

__all__ = ["CHUNK_BYTES", "MappedRows", "is_mapped"]

#: bytes of file rows per chunk of a full pass (validation, statistics): 32 MiB = 41 rows of
#: 200,000 float32 voxels; the pass holds a few arrays of that size at a time
CHUNK_BYTES = 32 << 20


def is_mapped(x: Any) -> TypeGuard[MappedRows]:
    """True for a :class:`MappedRows` (a modality kept on disk)."""
    return isinstance(x, MappedRows)


class MappedRows:
    """(N, F) float32 values of a modality: row ``rows[i]`` of a 2-D ``.npy`` file per sample.

    Parameters
    ----------
    source:
        the file as ``np.load(path, mmap_mode="r")`` returns it (a 2-D ``np.memmap``), or a
        path to such a file.
    rows:
        int64 (N,): the file row of each sample, ``-1`` where the sample has no row.
    log1p, center, scale, fill:
        a per-feature transform applied when rows are read (the fitted
        :class:`~moe_retriever.data.preprocessing.Preprocessor`): NaN cells -> ``fill``
        (before centring), optional ``log1p``, then ``(x - center) / scale``.
    nan_value:
        the value missing rows (and remaining NaN cells) read as; ``None`` keeps NaN.
    """

    def __init__(
        self,
        source: np.memmap | str | os.PathLike[str],
        rows: np.ndarray | None = None,
        *,
        log1p: bool = False,
        center: np.ndarray | None = None,
        scale: np.ndarray | None = None,
        fill: np.ndarray | None = None,
        nan_value: float | None = None,
    ) -> None:
        if not isinstance(source, np.memmap):
            source = np.load(os.fspath(source), mmap_mode="r")
        if not isinstance(source, np.memmap) or source.ndim != 2:
            raise ValueError(
                f"MappedRows needs a 2-D array file opened with mmap_mode='r', got "
                f"{type(source).__name__} of shape {getattr(source, 'shape', '?')}"
            )
        if not source.flags.c_contiguous:
            raise ValueError(f"{source.filename!r}: a Fortran-ordered array cannot be read by row")
        self.source = source
        n_file = int(source.shape[0])
        self.rows = (
            np.arange(n_file, dtype=np.int64)
            if rows is None
            else np.asarray(rows, dtype=np.int64).reshape(-1)
        )
        if self.rows.size and (self.rows.max() >= n_file or self.rows.min() < -1):
            raise ValueError(f"row indices must lie in -1..{n_file - 1}")
        self.log1p = bool(log1p)
        self.center = center
        self.scale = scale
        self.fill = fill
        self.nan_value = nan_value
        #: set once validation has read every row and found no infinite value; views derived
        #: from a checked one (subsets, hidden entries, transforms) inherit it, so splitting
        #: and masking do not read the file again
        self.checked = False
        self._fd: int | None = None
        self._pid: int | None = None

    # ------------------------------------------------------------------ array-like surface
    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.rows.shape[0]), int(self.source.shape[1]))

    @property
    def ndim(self) -> int:
        return 2

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.float32)

    @property
    def size(self) -> int:
        return self.shape[0] * self.shape[1]

    @property
    def path(self) -> str:
        return str(self.source.filename)

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return (
            f"MappedRows({self.path!r}, n_samples={self.shape[0]}, n_features={self.shape[1]}, "
            f"n_missing={int((self.rows < 0).sum())})"
        )

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self.gather(np.arange(self.shape[0]))
        return out if dtype is None else out.astype(dtype)

    def __getitem__(self, key: Any) -> np.ndarray:
        """Reads the selected rows (``x[idx]``, ``x[idx, cols]``) into a new array."""
        rest: tuple[Any, ...] = ()
        if isinstance(key, tuple):
            key, rest = key[0], key[1:]
        idx = np.arange(self.shape[0])[key]
        out = self.gather(np.atleast_1d(idx))
        if np.ndim(idx) == 0:
            out = out[0]
        return out[(slice(None), *rest)] if rest and out.ndim == 2 else out

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["source"] = self.path  # reopened by path: picklable for DataLoader workers
        state["_fd"] = state["_pid"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.source = np.load(state["source"], mmap_mode="r")

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None and self._pid == os.getpid():
            with contextlib.suppress(OSError):
                os.close(self._fd)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ lazy derivations
    def _derive(self, rows: np.ndarray, **changes: Any) -> MappedRows:
        kw: dict[str, Any] = {
            "log1p": self.log1p,
            "center": self.center,
            "scale": self.scale,
            "fill": self.fill,
            "nan_value": self.nan_value,
        }
        kw.update(changes)
        out = MappedRows(self.source, rows, **kw)
        out.checked = self.checked
        return out

    def take(self, index: np.ndarray) -> MappedRows:
        """The samples at ``index`` (positions or a boolean mask), nothing read."""
        idx = np.asarray(index)
        if idx.dtype == bool:
            idx = np.nonzero(idx)[0]
        return self._derive(self.rows[idx.astype(np.int64)].copy())

    def hide(self, missing: np.ndarray) -> MappedRows:
        """A copy whose samples flagged in ``missing`` (bool (N,)) have no row (read as NaN)."""
        rows = self.rows.copy()
        rows[np.asarray(missing, dtype=bool)] = -1
        return self._derive(rows)

    def with_transform(
        self, log1p: bool, center: np.ndarray, scale: np.ndarray, fill: np.ndarray
    ) -> MappedRows:
        """A copy that reads fill -> log1p -> (x - center) / scale; composing is refused."""
        if self.center is not None or self.log1p:
            raise ValueError(f"{self!r} already carries a transform")
        return self._derive(
            self.rows.copy(),
            log1p=log1p,
            center=np.asarray(center, np.float64),
            scale=np.asarray(scale, np.float64),
            fill=np.asarray(fill, np.float64),
        )

    def filled(self, value: float) -> MappedRows:
        """A copy whose missing rows and NaN cells read as ``value``."""
        return self._derive(self.rows.copy(), nan_value=float(value))

    def raw(self) -> MappedRows:
        """The same samples without transform or fill value (the file's own values)."""
        out = MappedRows(self.source, self.rows.copy())
        out.checked = self.checked
        return out

    # ------------------------------------------------------------------ reading
    def _file(self) -> int:
        if self._fd is None or self._pid != os.getpid():  # one descriptor per process
            self._fd = os.open(self.path, os.O_RDONLY)
            self._pid = os.getpid()
        return self._fd

    def _read_file_rows(self, file_rows: np.ndarray) -> np.ndarray:
        """Rows of the file (all >= 0) by ``pread``: neighbouring rows in one read."""
        n_cols = int(self.source.shape[1])
        itemsize = self.source.dtype.itemsize
        row_bytes = n_cols * itemsize
        out = np.empty((len(file_rows), n_cols), dtype=self.source.dtype)
        if not len(file_rows):
            return out
        order = np.argsort(file_rows, kind="stable")
        sorted_rows = file_rows[order]
        fd = self._file()
        start = 0
        while start < len(sorted_rows):  # runs of consecutive rows: one pread each
            stop = start + 1
            while stop < len(sorted_rows) and sorted_rows[stop] == sorted_rows[stop - 1] + 1:
                stop += 1
            first, count = int(sorted_rows[start]), stop - start
            buf = os.pread(fd, row_bytes * count, int(self.source.offset) + first * row_bytes)
            if len(buf) != row_bytes * count:
                raise OSError(f"{self.path!r}: short read at row {first} (file truncated?)")
            block = np.frombuffer(buf, dtype=self.source.dtype).reshape(count, n_cols)
            out[order[start:stop]] = block
            start = stop
        return out

    def gather(self, index: np.ndarray) -> np.ndarray:
        """float32 (len(index), F): the rows of the samples at ``index``, transform applied."""
        idx = np.asarray(index, dtype=np.int64).reshape(-1)
        file_rows = self.rows[idx]
        have = file_rows >= 0
        out = np.full((len(idx), self.shape[1]), np.nan, dtype=np.float32)
        if have.any():
            uniq, inverse = np.unique(file_rows[have], return_inverse=True)
            values = self._read_file_rows(uniq)[inverse]
            if self.center is not None:
                x = values.astype(np.float64)
                if self.fill is not None:
                    x = np.where(np.isnan(x), self.fill[None, :], x)
                if self.log1p:
                    x = np.log1p(x)
                x = (x - self.center) / self.scale
                values = x
            out[have] = values.astype(np.float32, copy=False)
        if self.nan_value is not None:
            np.nan_to_num(out, copy=False, nan=self.nan_value)
        return out

    def chunks(self, size: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(positions, values)`` over all samples, ``size`` rows at a time (default: as many
        as fit in :data:`CHUNK_BYTES`)."""
        if size is None:
            size = CHUNK_BYTES // max(1, self.shape[1] * self.source.dtype.itemsize)
        n = self.shape[0]
        for start in range(0, n, max(1, int(size))):
            pos = np.arange(start, min(n, start + size))
            yield pos, self.gather(pos)
