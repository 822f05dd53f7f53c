"""Reference points and classical anchors: what a deep method for missing modalities must beat.

Every anchor has the same three-step life, which is also its guarantee against leakage:

1. ``fit(train, val)``: a :class:`~moe_retriever.data.preprocessing.Preprocessor` is fitted on
   ``train`` alone; for every value of the anchor's small regularisation grid a model is fitted
   on ``train`` alone and scored on ``val`` (macro-F1, ties broken by the lower log-loss, then
   by the stronger regularisation); the winner, fitted on ``train`` alone, is kept. ``val``
   only ever chooses, it never trains; test data are never passed in.
2. ``predict_proba(data)``: (N, C) class probabilities, row by row (a row's prediction does not
   depend on the other rows).
3. ``selected_`` / ``val_scores_``: what was chosen and why, written into the benchmark outputs.

Anchors (issue 6) — classical models on the preprocessed (log1p where flagged, standardised)
features:

* ``lr-late-fusion``: one logistic regression per modality, fitted on the training samples that
  observe it; a sample averages the probabilities of its observed modalities.
* ``lr-mean-impute``: missing modalities at their training mean, all modalities concatenated,
  one logistic regression.
* ``hgb``: scikit-learn's HistGradientBoostingClassifier on the concatenated features, with NaN
  for missing modalities (its native missing-value handling).

Logistic regressions use ``class_weight="balanced"`` by default (the anchors are meant to be a
hard bar for macro-F1 on skewed cohorts) and choose the inverse regularisation ``C`` on ``val``.

Reference points (issue 5), outside the completion interface:

* ``late-fusion``: one small neural network per modality (scikit-learn ``MLPClassifier``, one
  hidden layer of 128 units, L2 ``alpha`` chosen on ``val``) fitted on the training samples that
  observe the modality, probabilities averaged over the observed modalities. An MLP rather than
  the deep token model because the deep model needs at least two modalities by construction.
* ``complete-case``: the deep model (``MoERetrieverClassifier``) trained only on the COMPLETE
  training samples (incomplete ones dropped; validation kept whole for model selection). At
  prediction time a model never trained with a missing modality still has to fill one; it fills
  with the training mean token (completion ``mean``), the classical partner of complete-case
  analysis.
"""

from __future__ import annotations

import contextlib
import warnings
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
from sklearn.base import ClassifierMixin, clone
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.neural_network import MLPClassifier
from threadpoolctl import threadpool_limits

from moe_retriever.data.core import DataValidationError, MultimodalData
from moe_retriever.data.preprocessing import Preprocessor

__all__ = [
    "ANCHORS",
    "Anchor",
    "CompleteCase",
    "HGBAnchor",
    "LRLateFusion",
    "LRMeanImpute",
    "LateFusionAnchor",
    "MLPLateFusion",
    "create_anchor",
    "list_anchors",
]


def _log_loss(y: np.ndarray, proba: np.ndarray) -> float:
    p = np.clip(proba[np.arange(len(y)), y], 1e-12, 1.0)
    return float(-np.log(p).mean())


def _full_proba(clf: Any, x: np.ndarray, n_classes: int) -> np.ndarray:
    """predict_proba mapped onto all ``n_classes`` columns (a fit may have seen fewer)."""
    out = np.zeros((x.shape[0], n_classes))
    out[:, np.asarray(clf.classes_, dtype=int)] = clf.predict_proba(x)
    return out


def _require_labels(data: MultimodalData, role: str) -> np.ndarray:
    if data.y is None:
        raise DataValidationError(f"{role} data {data.name!r} has no labels")
    return data.y


class Anchor(ABC):
    """A classifier fitted on train, tuned on val, predicting probabilities for any data."""

    name: ClassVar[str] = ""
    #: "anchor" (classical model) or "reference" (reference point of issue 5)
    kind: ClassVar[str] = "anchor"
    #: whether it has tokens (retrieve/encode) for the fidelity measure
    has_tokens: ClassVar[bool] = False

    def __init__(
        self, seed: int = 0, grid: Sequence[Any] | None = None, threads: int | None = 1
    ) -> None:
        self.seed = seed
        self.grid = list(grid) if grid is not None else list(self.default_grid())
        #: BLAS/OpenMP threads while fitting and predicting (None: leave the pools alone).
        #: 1 by default: on a shared 2-core machine one HistGradientBoosting fit took 0.18 s
        #: with one OpenMP thread and 5.7 s with two (docs/DEFAULTS.md).
        self.threads = threads

    def _limits(self) -> Any:
        if self.threads is None:
            return contextlib.nullcontext()
        return threadpool_limits(limits=int(self.threads))

    @classmethod
    def default_grid(cls) -> list[Any]:
        return [None]

    # -------------------------------------------------------------- what subclasses write
    @abstractmethod
    def _fit_one(self, train: MultimodalData, param: Any) -> Any:
        """Fit on (preprocessed) ``train`` with one grid value; returns the fitted state."""

    @abstractmethod
    def _proba(self, state: Any, data: MultimodalData) -> np.ndarray:
        """(N, C) probabilities of (preprocessed) ``data`` under a fitted state."""

    # -------------------------------------------------------------- the common life
    def fit(self, train: MultimodalData, val: MultimodalData | None = None) -> Anchor:
        """Preprocess with train statistics, choose on ``val`` (if any), keep the train fit."""
        with self._limits():
            return self._fit(train, val)

    def _fit(self, train: MultimodalData, val: MultimodalData | None) -> Anchor:
        y_train = _require_labels(train, "training")
        self.n_classes_ = max(train.n_classes, int(y_train.max()) + 1)
        self.preprocessor_ = Preprocessor().fit(train)
        tr = self.preprocessor_.transform(train)
        va = self.preprocessor_.transform(val) if val is not None and val.n_samples else None
        self.val_scores_: list[dict[str, Any]] = []
        best: tuple[float, float, int] | None = None
        best_state: Any = None
        for rank, param in enumerate(self.grid):
            state = self._fit_one(tr, param)
            if va is None or len(self.grid) == 1:
                best_state, self.selected_ = state, {"param": param}
                break
            y_val = _require_labels(va, "validation")
            proba = self._proba(state, va)
            f1 = float(f1_score(y_val, proba.argmax(1), average="macro"))
            ll = _log_loss(y_val, proba)
            self.val_scores_.append(
                {"param": _jsonable(param), "val_macro_f1": f1, "val_log_loss": ll}
            )
            # grid order = strongest regularisation first: rank breaks remaining ties
            key = (f1, -ll, -rank)
            if best is None or key > best:
                best, best_state, self.selected_ = key, state, {"param": param}
        self.state_ = best_state
        self.selected_ = {"param": _jsonable(self.selected_["param"])}
        return self

    def predict_proba(self, data: MultimodalData) -> np.ndarray:
        if not hasattr(self, "state_"):
            raise RuntimeError(f"{self.name}: call fit before predict_proba")
        with self._limits():
            return self._proba(self.state_, self.preprocessor_.transform(data))

    def predict(self, data: MultimodalData) -> np.ndarray:
        return self.predict_proba(data).argmax(axis=1)


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    return v


def _concat(data: MultimodalData) -> np.ndarray:
    return np.concatenate([data.X[m] for m in data.modalities], axis=1)


# ---------------------------------------------------------------------------- late fusion
class LateFusionAnchor(Anchor):
    """One classifier per modality on the samples observing it; probabilities averaged."""

    @abstractmethod
    def _make(self, param: Any) -> ClassifierMixin: ...

    def _fit_one(self, train: MultimodalData, param: Any) -> Any:
        y = _require_labels(train, "training")
        prior = np.bincount(y, minlength=self.n_classes_) / len(y)
        models: dict[str, Any] = {}
        for j, m in enumerate(train.modalities):
            have = train.observed[:, j]
            if len(np.unique(y[have])) < 2:
                continue  # cannot learn from one class: the modality abstains
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                models[m] = clone(self._make(param)).fit(train.X[m][have], y[have])
        return {"models": models, "prior": prior}

    def _proba(self, state: Any, data: MultimodalData) -> np.ndarray:
        total = np.zeros((data.n_samples, self.n_classes_))
        count = np.zeros(data.n_samples)
        for j, m in enumerate(data.modalities):
            clf = state["models"].get(m)
            have = data.observed[:, j]
            if clf is None or not have.any():
                continue
            total[have] += _full_proba(clf, data.X[m][have], self.n_classes_)
            count[have] += 1
        out = np.where(count[:, None] > 0, total / np.maximum(count, 1)[:, None], 0.0)
        out[count == 0] = state["prior"]
        return out


class LRLateFusion(LateFusionAnchor):
    name = "lr-late-fusion"

    @classmethod
    def default_grid(cls) -> list[Any]:
        return [0.001, 0.01, 0.1, 1.0, 10.0]

    def _make(self, param: Any) -> ClassifierMixin:
        return LogisticRegression(C=param, class_weight="balanced", max_iter=2000)


class MLPLateFusion(LateFusionAnchor):
    name = "late-fusion"
    kind = "reference"

    @classmethod
    def default_grid(cls) -> list[Any]:
        return [1.0, 0.1, 0.001]

    def _make(self, param: Any) -> ClassifierMixin:
        return MLPClassifier(
            hidden_layer_sizes=(128,), alpha=param, max_iter=200, random_state=self.seed
        )


# ---------------------------------------------------------------------------- early fusion
class LRMeanImpute(Anchor):
    name = "lr-mean-impute"

    @classmethod
    def default_grid(cls) -> list[Any]:
        return [0.001, 0.01, 0.1, 1.0, 10.0]

    def _fit_one(self, train: MultimodalData, param: Any) -> Any:
        y = _require_labels(train, "training")
        means = {}
        for j, m in enumerate(train.modalities):
            have = train.observed[:, j]
            x = train.X[m][have]
            means[m] = x.mean(axis=0) if have.any() else np.zeros(x.shape[1], np.float32)
        x = self._impute(train, means)
        clf = LogisticRegression(C=param, class_weight="balanced", max_iter=2000)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(x, y)
        return {"means": means, "clf": clf}

    @staticmethod
    def _impute(data: MultimodalData, means: dict[str, np.ndarray]) -> np.ndarray:
        parts = []
        for j, m in enumerate(data.modalities):
            x = data.X[m].copy()
            x[~data.observed[:, j]] = means[m]
            parts.append(x)
        return np.concatenate(parts, axis=1)

    def _proba(self, state: Any, data: MultimodalData) -> np.ndarray:
        return _full_proba(state["clf"], self._impute(data, state["means"]), self.n_classes_)


class HGBAnchor(Anchor):
    name = "hgb"

    @classmethod
    def default_grid(cls) -> list[Any]:
        # strongest regularisation first (bigger leaves, more L2)
        return [
            {"min_samples_leaf": 20, "l2_regularization": 1.0},
            {"min_samples_leaf": 20, "l2_regularization": 0.0},
            {"min_samples_leaf": 5, "l2_regularization": 1.0},
            {"min_samples_leaf": 5, "l2_regularization": 0.0},
        ]

    def _fit_one(self, train: MultimodalData, param: Any) -> Any:
        clf = HistGradientBoostingClassifier(
            max_iter=100,
            learning_rate=0.1,
            max_leaf_nodes=15,
            early_stopping=False,
            random_state=self.seed,
            **(param or {}),
        )
        return clf.fit(_concat(train), _require_labels(train, "training"))

    def _proba(self, state: Any, data: MultimodalData) -> np.ndarray:
        return _full_proba(state, _concat(data), self.n_classes_)


# ---------------------------------------------------------------------------- complete case
class CompleteCase(Anchor):
    """The deep model trained on complete training samples only (see the module docstring)."""

    name = "complete-case"
    kind = "reference"
    has_tokens = True

    def __init__(
        self,
        seed: int = 0,
        grid: Sequence[Any] | None = None,
        threads: int | None = None,
        config: Any = None,
        fill: str = "mean",
    ) -> None:
        super().__init__(seed, grid, threads)
        self.config = config
        self.fill = fill

    def fit(self, train: MultimodalData, val: MultimodalData | None = None) -> CompleteCase:
        from moe_retriever.training.estimator import MoERetrieverClassifier

        complete = np.asarray(train.observed.all(axis=1), dtype=bool)
        y = _require_labels(train, "training")
        if complete.sum() < 2 or len(np.unique(y[complete])) < 2:
            raise DataValidationError(
                f"complete-case: only {int(complete.sum())} complete training samples "
                f"(classes {sorted(set(y[complete].tolist()))}); need two classes to train"
            )
        self.n_dropped_ = int((~complete).sum())
        self.estimator_ = MoERetrieverClassifier(
            method=self.fill, config=self.config, seed=self.seed
        )
        self.estimator_.fit(train.subset(complete), val)
        self.preprocessor_ = self.estimator_.preprocessor_  # the fidelity probe reads it
        self.selected_ = {
            "param": None,
            "n_train_complete": int(complete.sum()),
            "n_dropped": self.n_dropped_,
        }
        self.val_scores_ = []
        return self

    def _fit_one(self, train: MultimodalData, param: Any) -> Any:  # pragma: no cover
        raise NotImplementedError

    def _proba(self, state: Any, data: MultimodalData) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def predict_proba(self, data: MultimodalData) -> np.ndarray:
        return np.asarray(self.estimator_.predict_proba(data))

    def retrieve(self, data: MultimodalData) -> np.ndarray:
        return np.asarray(self.estimator_.retrieve(data))

    def encode(self, data: MultimodalData) -> np.ndarray:
        return np.asarray(self.estimator_.encode(data))


ANCHORS: dict[str, type[Anchor]] = {
    cls.name: cls for cls in (LRLateFusion, LRMeanImpute, HGBAnchor, MLPLateFusion, CompleteCase)
}


def list_anchors(kind: str | None = None) -> list[str]:
    """Names of anchors (``kind="anchor"``) or reference points (``kind="reference"``)."""
    return [n for n, c in ANCHORS.items() if kind is None or c.kind == kind]


def create_anchor(name: str, seed: int = 0, **options: Any) -> Anchor:
    if name not in ANCHORS:
        raise ValueError(f"unknown anchor {name!r}; known: {', '.join(ANCHORS)}")
    return ANCHORS[name](seed=seed, **options)
