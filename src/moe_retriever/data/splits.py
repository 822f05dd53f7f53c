"""Train / validation / test splits by sample id: stratified, seeded, saved as JSON.

A :class:`Split` holds sample ids, not positions, so it survives re-ordering and can be
written by hand. :func:`apply_split` checks a split against the data (unknown ids, ids in two
parts, samples in no part) before using it.
"""

from __future__ import annotations

import json
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from moe_retriever.data.core import DataValidationError, MultimodalData
from moe_retriever.data.validation import preview

__all__ = ["MIN_CLASS_SIZE", "Split", "apply_split", "cv_split", "make_split", "stratified_folds"]

#: a class with fewer samples than this goes entirely to the training part (with a warning):
#: one sample cannot be in two parts, and a class seen only at test time cannot be learned.
MIN_CLASS_SIZE = 3

_PARTS = ("train", "val", "test")


@dataclass
class Split:
    """Sample ids of the three parts, and the seed that drew them (``None``: user-given)."""

    train: list[str]
    val: list[str]
    test: list[str]
    seed: int | None = None
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.train = [str(i) for i in self.train]
        self.val = [str(i) for i in self.val]
        self.test = [str(i) for i in self.test]
        self._check_disjoint()

    def _check_disjoint(self) -> None:
        for part in _PARTS:
            dup = [i for i, c in Counter(getattr(self, part)).items() if c > 1]
            if dup:
                raise DataValidationError(f"split: ids listed twice in {part!r}: {preview(dup)}")
        for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
            both = sorted(set(getattr(self, a)) & set(getattr(self, b)))
            if both:
                raise DataValidationError(f"split: ids in both {a!r} and {b!r}: {preview(both)}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "train": list(self.train),
            "val": list(self.val),
            "test": list(self.test),
            "notes": list(self.notes),
        }

    def save(self, path: str | Path) -> Path:
        """Write the split as JSON (keys ``train``, ``val``, ``test``, ``seed``, ``notes``)."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(self.to_dict(), indent=1))
        return p

    @classmethod
    def load(cls, path: str | Path) -> Split:
        """Read a JSON split file; ``val`` may be omitted (empty), ``train``/``test`` not."""
        p = Path(path)
        if not p.exists():
            raise FileNotFoundError(f"no split file at {str(p)!r}")
        try:
            raw = json.loads(p.read_text())
        except json.JSONDecodeError as exc:
            raise DataValidationError(f"split file {str(p)!r} is not valid JSON: {exc}") from exc
        return cls.from_dict(raw, source=str(p))

    @classmethod
    def from_dict(cls, raw: Any, source: str = "split") -> Split:
        if not isinstance(raw, dict):
            raise DataValidationError(f"{source}: expected a JSON object with train/val/test")
        for part in ("train", "test"):
            if part not in raw:
                raise DataValidationError(f"{source}: missing the list {part!r}")
        for part in _PARTS:
            if part in raw and not isinstance(raw[part], list):
                raise DataValidationError(f"{source}: {part!r} must be a list of sample ids")
        seed = raw.get("seed")
        return cls(
            train=raw["train"],
            val=raw.get("val", []),
            test=raw["test"],
            seed=None if seed is None else int(seed),
            notes=[str(n) for n in raw.get("notes", [])],
        )

    def check(self, data: MultimodalData) -> None:
        """Raise naming ids unknown to ``data``, or samples of ``data`` in no part."""
        known = set(data.ids.tolist())
        listed = [i for part in _PARTS for i in getattr(self, part)]
        unknown = [i for i in listed if i not in known]
        if unknown:
            raise DataValidationError(
                f"split lists {len(unknown)} id(s) not in data {data.name!r}: {preview(unknown)}"
            )
        absent = sorted(known - set(listed))
        if absent:
            raise DataValidationError(
                f"{len(absent)} sample(s) of data {data.name!r} are in no part of the split: "
                f"{preview(absent)}"
            )
        if not self.train:
            raise DataValidationError("split: the training part is empty")

    def __repr__(self) -> str:
        return (
            f"Split(train={len(self.train)}, val={len(self.val)}, test={len(self.test)}, "
            f"seed={self.seed})"
        )


def _quotas(sizes: np.ndarray, total: int, rng: np.random.Generator) -> np.ndarray:
    """Integer per-class counts summing to ``total``, proportional to ``sizes``.

    Largest-remainder rounding; ties broken by a seeded permutation.
    """
    if total <= 0 or sizes.sum() == 0:
        return np.zeros_like(sizes)
    exact = sizes * (total / sizes.sum())
    base = np.floor(exact).astype(np.int64)
    rest = total - int(base.sum())
    if rest > 0:
        tie = rng.permutation(len(sizes))
        order = np.lexsort((tie, -(exact - base)))
        base[order[:rest]] += 1
    return base


def make_split(
    data: MultimodalData,
    val_fraction: float = 0.15,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> Split:
    """A stratified split of ``data`` by label (plain random split when unlabelled).

    The part sizes are ``round(N * fraction)`` among stratifiable samples, shared out over
    classes in proportion to their sizes, with at least one training sample per class. Classes
    with fewer than :data:`MIN_CLASS_SIZE` samples go to training only; a warning names them
    and the split's ``notes`` record it. Each part lists ids in the data's order. The same
    data and seed give the same split.
    """
    for label, f in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 <= f < 1:
            raise ValueError(f"{label} must be in [0, 1), got {f}")
    if val_fraction + test_fraction >= 1:
        raise ValueError(
            f"val_fraction + test_fraction must be < 1, got {val_fraction + test_fraction}"
        )
    n = data.n_samples
    if n == 0:
        raise DataValidationError(f"data {data.name!r} has no samples to split")
    rng = np.random.default_rng(seed)
    y = data.y if data.y is not None else np.zeros(n, dtype=np.int64)
    classes, sizes = np.unique(y, return_counts=True)
    notes: list[str] = []
    small = classes[sizes < MIN_CLASS_SIZE] if data.y is not None else classes[:0]
    if small.size:
        names = [data.class_names[c] if c < len(data.class_names) else str(c) for c in small]
        msg = (
            f"classes {names} have fewer than {MIN_CLASS_SIZE} samples; they are put in the "
            "training part only (not in validation or test)"
        )
        notes.append(msg)
        warnings.warn(msg, stacklevel=2)
    big = sizes >= MIN_CLASS_SIZE if data.y is not None else np.ones_like(sizes, bool)
    n_strat = int(sizes[big].sum())
    n_test = round(n_strat * test_fraction)
    n_val = round(n_strat * val_fraction)
    test_q = _quotas(np.where(big, sizes, 0), n_test, rng)
    val_q = _quotas(np.where(big, sizes, 0), n_val, rng)
    # keep at least one training sample per class: take back from val first, then test
    over = test_q + val_q - (sizes - 1)
    over = np.where(big, np.maximum(over, 0), 0)
    take_val = np.minimum(over, val_q)
    val_q = val_q - take_val
    test_q = test_q - (over - take_val)
    part = np.zeros(n, dtype=np.int8)  # 0 train, 1 val, 2 test
    for c, k_test, k_val, ok in zip(classes, test_q, val_q, big):
        if not ok:
            continue
        members = np.nonzero(y == c)[0]
        members = members[rng.permutation(len(members))]
        part[members[:k_test]] = 2
        part[members[k_test : k_test + k_val]] = 1
    ids = data.ids
    return Split(
        train=ids[part == 0].tolist(),
        val=ids[part == 1].tolist(),
        test=ids[part == 2].tolist(),
        seed=seed,
        notes=notes,
    )


def stratified_folds(data: MultimodalData, k: int, seed: int) -> np.ndarray:
    """Fold index (0..k-1) per sample for stratified k-fold, like :func:`make_split`.

    Per class, the members are shuffled (``default_rng(seed)``) and dealt round-robin to the
    folds, continuing the deal across classes so fold sizes differ by at most one. Classes with
    fewer than :data:`MIN_CLASS_SIZE` samples get ``-1``: always in
    training, never tested (as ``make_split`` keeps them out of validation and test).
    """
    if k < 2:
        raise ValueError(f"cross-validation needs k >= 2 folds, got {k}")
    y = np.asarray(data.y) if data.y is not None else np.zeros(data.n_samples, dtype=np.int64)
    classes, sizes = np.unique(y, return_counts=True)
    n_strat = int(sizes[sizes >= MIN_CLASS_SIZE].sum())
    if n_strat < k:
        raise ValueError(
            f"cross-validation with k={k} folds needs at least {k} samples in classes of "
            f">= {MIN_CLASS_SIZE}; data {data.name!r} has {n_strat}"
        )
    rng = np.random.default_rng(seed)
    fold = np.full(data.n_samples, -1, dtype=np.int64)
    offset = 0
    for c, size in zip(classes, sizes):
        if size < MIN_CLASS_SIZE:
            continue
        members = np.nonzero(y == c)[0]
        members = members[rng.permutation(len(members))]
        fold[members] = (np.arange(len(members)) + offset) % k
        offset += len(members)
    return fold


def cv_split(
    data: MultimodalData, folds: np.ndarray, fold: int, val_fraction: float, seed: int
) -> Split:
    """Test = fold ``fold``; validation carved stratified (``val_fraction`` of the rest) from
    the rest, with a seed derived from (``seed``, ``fold``); training = what remains."""
    ids = data.ids
    rest = data.subset(folds != fold)
    sub_seed = int(np.random.SeedSequence([int(seed), int(fold)]).generate_state(1)[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small classes stay in training, as in make_split
        inner = make_split(rest, val_fraction=val_fraction, test_fraction=0.0, seed=sub_seed)
    return Split(train=inner.train, val=inner.val, test=ids[folds == fold].tolist(), seed=seed)


def apply_split(
    data: MultimodalData, split: Split | str | Path
) -> tuple[MultimodalData, MultimodalData, MultimodalData]:
    """``(train, val, test)`` subsets of ``data``; ``split`` may be a Split or a JSON path.

    The split is checked first (unknown ids, overlaps, samples in no part raise). An empty
    part gives a MultimodalData with zero samples.
    """
    if not isinstance(split, Split):
        split = Split.load(split)
    split.check(data)
    return tuple(data.select_ids(getattr(split, p)) for p in _PARTS)  # type: ignore[return-value]
