"""A scikit-learn-style estimator for notebooks and scripts.

    >>> from moe_retriever.datasets import load_dataset
    >>> from moe_retriever.data.splits import make_split, apply_split
    >>> from moe_retriever.training.estimator import MoERetrieverClassifier
    >>> data = load_dataset("miniacc")
    >>> train, val, test = apply_split(data, make_split(data, seed=0))
    >>> clf = MoERetrieverClassifier(epochs=20, seed=0).fit(train, val)
    >>> proba = clf.predict_proba(test)            # (N, C)
    >>> tokens = clf.retrieve(test)                # (N, M, P, D) completed embeddings
    >>> clf.save("model_dir"); clf2 = MoERetrieverClassifier.load("model_dir")

The constructor only stores settings; ``fit`` sets the fitted attributes (ending in ``_``):
``model_`` (the ``MultimodalClassifier``), ``preprocessor_`` (fitted on ``train`` only),
``config_`` (the resolved ``TrainConfig``), ``classes_``, ``modalities_``, ``dims_``,
``history_`` (one dict per epoch), ``best_epoch_``, ``n_dropped_``, ``batch_size_`` (the training
batch size, ``train.batch_size: auto`` resolved).

``train.ensemble: N`` (N > 1) fits N members on the same data: member 0 with ``seed`` (its
model, history and best epoch are this estimator's ``model_``, ``history_``, ``best_epoch_``),
member i with ``derived_seed(seed, i)`` (``extra_members_``, each a fitted single-model
estimator). ``predict_proba`` / ``predict`` average the members' class probabilities;
``retrieve``, ``encode`` and ``routing_stats`` describe member 0 (tokens of different members
live in different spaces, so averaging them would mean nothing). ``save`` writes the extra
members under ``members/<i>/``; ``load`` restores them.

Keyword overrides are config keys: dotted (``**{"optim.lr": 3e-4}``), ``__``-separated
(``optim__lr=3e-4``) or a leaf name that is unique in the config (``epochs=10``).

Multi-process training (``devices > 1`` with ``strategy="ddp"``) re-launches the running
script per process, so it works from scripts and the command line, not from notebooks.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import json
import logging
import pickle
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor

from moe_retriever.completion.base import Completion
from moe_retriever.data.core import DataValidationError, MultimodalData
from moe_retriever.data.preprocessing import Preprocessor
from moe_retriever.data.splits import make_split
from moe_retriever.data.validation import check_predictable, drop_empty
from moe_retriever.heads.base import Head
from moe_retriever.training.callbacks import (
    HistoryCSV,
    KillAfterEpoch,
    WarmupEarlyStopping,
    checkpoint_callback,
)
from moe_retriever.training.config import TrainConfig, resolve_batch_size, resolve_key
from moe_retriever.training.datamodule import MultimodalDataModule, TensorSet, eval_loader
from moe_retriever.training.module import (
    ClassifierModule,
    adjust_logits,
    balanced_class_weights,
    build_model,
    class_log_prior,
    derived_seed,
)

#: 2: the model is built from parts (fusion and classifier live under ``head.``)
FORMAT_VERSION = 2

_NOISY_LOGGERS = (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.pytorch.accelerators.cuda",
    "lightning.fabric.utilities.seed",
    "lightning.fabric.utilities.distributed",
    "lightning.pytorch.utilities.distributed",
)


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Silence Lightning's start-up chatter (GPU/TPU availability, seed notices, hints)."""
    levels = {}
    for name in _NOISY_LOGGERS:
        lg = logging.getLogger(name)
        levels[name] = lg.level
        lg.setLevel(logging.WARNING)
    with warnings.catch_warnings():
        for pattern in (
            ".*does not have many workers.*",
            ".*smaller than the logging interval.*",
            ".*sync_dist=True.*",
            ".*Checkpoint directory.*exists and is not empty.*",
            ".*isn't any validation data.*",
            ".*LeafSpec.*",
        ):
            warnings.filterwarnings("ignore", pattern)
        try:
            yield
        finally:
            for name, level in levels.items():
                logging.getLogger(name).setLevel(level)


class UnsafeCheckpointError(ValueError):
    """A checkpoint that holds more than tensors and plain data (or cannot be read at all)."""


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a Lightning checkpoint with ``weights_only=True``: tensors and plain containers only.

    A checkpoint is a pickle; unpickling one with ``weights_only=False`` runs whatever callable
    it names, so a tampered run folder would execute code on ``--resume``. Anything the safe
    unpickler refuses (or a file that is not a checkpoint) raises one line naming the file.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnsafeCheckpointError(
            f"checkpoint {str(path)!r} was refused: it is not a plain weights-only checkpoint "
            f"(it may hold code, which is never unpickled) [{reason[:160]}]"
        ) from None
    if not isinstance(state, dict):
        raise UnsafeCheckpointError(
            f"checkpoint {str(path)!r} holds a {type(state).__name__}, not a checkpoint dict"
        )
    return state


def make_logger(kind: str, root: Path) -> Any:
    """Lightning's own logger for a run folder: ``csv`` (``<root>/logs/metrics.csv`` and
    ``hparams.yaml``: every logged metric per epoch and the resolved config), ``tensorboard``
    or ``mlflow`` (when installed; a file store under ``<root>/mlruns``), ``none``: False."""
    if kind == "none":
        return False
    if kind == "csv":
        from lightning.pytorch.loggers import CSVLogger

        return CSVLogger(str(root), name="logs", version="")
    if kind == "tensorboard":
        try:
            from lightning.pytorch.loggers import TensorBoardLogger

            return TensorBoardLogger(str(root), name="logs", version="")
        except ModuleNotFoundError as exc:
            raise ValueError(
                f"runtime.logger=tensorboard needs the tensorboard package ({exc}): "
                "pip install tensorboard"
            ) from None
    if kind == "mlflow":
        try:
            import mlflow  # noqa: F401
        except ModuleNotFoundError:
            raise ValueError(
                "runtime.logger=mlflow needs the mlflow package: pip install mlflow"
            ) from None
        from lightning.pytorch.loggers import MLFlowLogger

        return MLFlowLogger(experiment_name="moe-retriever", save_dir=str(root / "mlruns"))
    raise ValueError(f"runtime.logger {kind!r} unknown; choose none, csv, tensorboard or mlflow")


def _require_data(data: Any, what: str) -> None:
    """Refuse anything but MultimodalData with a message that says how to build one."""
    if isinstance(data, MultimodalData):
        return
    hint = "build one with moe_retriever.data.readers.from_arrays or read_folder"
    if isinstance(data, dict):
        hint = (
            "a dict of tables becomes one with moe_retriever.data.readers.from_pandas(frames, "
            "labels) (DataFrames) or from_arrays(X, labels) (arrays)"
        )
    raise TypeError(f"{what} must be a MultimodalData, got {type(data).__name__}; {hint}")


def _fitted_weights(state_dict: dict[str, Any]) -> dict[str, Any]:
    """The model weights a checkpoint's module state holds: the weight average
    (``ema_model.module.*``, ``train.weight_average: ema``) once it has been updated, else the
    live weights (``model.*``)."""
    n_avg = state_dict.get("ema_model.n_averaged")
    prefix = "ema_model.module." if n_avg is not None and int(n_avg) > 0 else "model."
    return {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}


def _say(msg: str) -> None:
    if getattr(rank_zero_only, "rank", 0) == 0:
        print(msg, flush=True)


def _apply_threads(cfg: TrainConfig) -> None:
    if cfg.runtime.threads is not None and torch.get_num_threads() != cfg.runtime.threads:
        torch.set_num_threads(cfg.runtime.threads)


def _use_cuda(cfg: TrainConfig) -> bool:
    acc = cfg.runtime.accelerator
    return acc in ("auto", "gpu", "cuda") and torch.cuda.is_available()


class MoERetrieverClassifier:
    """Multimodal classifier with per-sample missing modalities (see the module docstring).

    A scikit-learn estimator: the constructor only stores its arguments, ``get_params`` /
    ``set_params`` read and change them, and ``sklearn.base.clone`` gives an unfitted copy
    that fits to identical predictions.

    Parameters
    ----------
    method:
        a method (preset of parts): a completion method name ("moe-retriever" (default),
        "zero", "official-average", "mean", "bank", "knn", "none", ...) or another registered
        preset; ``moe-retriever list`` shows them.
    config:
        a :class:`TrainConfig`, a dict of its sections, or a YAML path; ``None`` = defaults.
    seed:
        seeds weight init, batch order, dropout and supporting-group draws.
    completion, head:
        another part than the method's: a name / import path, or a dict
        ``{"name": ..., <option>: ...}`` (without "name": options of the method's part).
    encoders:
        per-modality encoders: a name or import path (``"mypkg.enc:MyEncoder"``), a dict
        ``{"name": ..., <option>: ...}``, an encoder class (saved by its import path), or a
        built ``nn.Module`` (copied at ``fit``; pass it again to :meth:`load`).
    **overrides:
        config keys to override (see the module docstring).
    """

    _estimator_type = "classifier"
    _PARAMS = ("method", "config", "seed", "completion", "head", "encoders")

    def __init__(
        self,
        method: str = "moe-retriever",
        config: TrainConfig | dict[str, Any] | str | Path | None = None,
        seed: int = 0,
        *,
        completion: str | dict[str, Any] | None = None,
        head: str | dict[str, Any] | None = None,
        encoders: dict[str, Any] | None = None,
        **overrides: Any,
    ) -> None:
        self.method = method
        self.config = config
        self.seed = seed
        self.completion = completion
        self.head = head
        self.encoders = encoders
        self.overrides = overrides

    # ------------------------------------------------------------------ scikit-learn
    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Constructor arguments (``deep`` is accepted for scikit-learn; nothing nests)."""
        out = {k: getattr(self, k) for k in self._PARAMS}
        out.update(self.overrides)
        return out

    def set_params(self, **params: Any) -> MoERetrieverClassifier:
        """Change constructor arguments; config keys (``epochs=5``, ``optim__lr=1e-3``)
        become overrides (checked like the constructor's)."""
        for key, value in params.items():
            if key in self._PARAMS:
                setattr(self, key, value)
            else:
                resolve_key(key)  # unknown keys fail here, naming the valid ones
                self.overrides[key] = value
        return self

    # ------------------------------------------------------------------ configuration
    def resolved_config(self) -> TrainConfig:
        """The config this estimator trains with: ``config`` + ``method`` + parts +
        ``overrides``; parts and their options are checked (one-line ``ValueError``)."""
        if self.config is None:
            cfg = TrainConfig()
        elif isinstance(self.config, TrainConfig):
            cfg = self.config.copy()
        elif isinstance(self.config, dict):
            cfg = TrainConfig.from_dict(self.config)
        else:
            cfg = TrainConfig.from_yaml(self.config)
        cfg.method = self.method
        for section, given in (("completion", self.completion), ("head", self.head)):
            if given is not None:
                setattr(cfg, section, {"name": given} if isinstance(given, str) else dict(given))
        for modality, spec in (self.encoders or {}).items():
            if isinstance(spec, type):
                spec = f"{spec.__module__}:{spec.__qualname__}"
            if isinstance(spec, str | dict):
                cfg.model.encoders[str(modality)] = spec
            elif not isinstance(spec, torch.nn.Module):
                raise ValueError(
                    f"encoders[{modality!r}]: expected a name, a dict, an encoder class or an "
                    f"nn.Module, got {type(spec).__name__}"
                )
        for name, value in self.overrides.items():
            cfg.set(resolve_key(name, cfg), value)
        cfg.seeds = [int(self.seed)]
        cfg.validate()
        cfg.parts()
        return cfg

    def _encoder_modules(self) -> dict[str, torch.nn.Module]:
        """Built encoder modules given in ``encoders`` (copies: ``fit`` never trains the
        caller's object, so a clone or a refit starts from the same weights)."""
        return {
            str(m): copy.deepcopy(v)
            for m, v in (self.encoders or {}).items()
            if isinstance(v, torch.nn.Module)
        }

    def __repr__(self) -> str:
        parts = [f"method={self.method!r}", f"seed={self.seed}"]
        parts += [
            f"{k}={getattr(self, k)!r}"
            for k in ("completion", "head", "encoders")
            if getattr(self, k) is not None
        ]
        parts += [f"{k}={v!r}" for k, v in self.overrides.items()]
        return f"MoERetrieverClassifier({', '.join(parts)})"

    # ------------------------------------------------------------------ fitting
    def fit(
        self,
        train: MultimodalData,
        val: MultimodalData | None = None,
        *,
        run_dir: str | Path | None = None,
        ckpt_path: str | Path | None = None,
        callbacks: Sequence[L.Callback] | None = None,
    ) -> MoERetrieverClassifier:
        """Train on ``train``, select the best epoch on ``val``.

        ``val=None`` carves a stratified, seeded validation part (``data.val_fraction``) out
        of ``train``. Samples without any observed modality are dropped from training (the
        count is printed). ``run_dir``: keep checkpoints (``checkpoints/best.ckpt``,
        ``last.ckpt``) and ``history.csv`` there; otherwise a temporary folder is used.
        ``ckpt_path``: resume from this Lightning checkpoint (same data, config and seed).
        ``callbacks``: extra Lightning callbacks for the trainer (e.g. the tuner's pruning
        callback, :mod:`moe_retriever.training.tuning`); with ``train.ensemble > 1`` they
        watch member 0 only.
        """
        _require_data(train, "fit(train)")
        if val is not None:
            _require_data(val, "fit(val)")
        cfg = self.resolved_config()
        if cfg.train.ensemble > 1:
            return self._fit_ensemble(cfg, train, val, run_dir, ckpt_path, callbacks)
        _apply_threads(cfg)
        if train.y is None:
            raise DataValidationError(f"training data {train.name!r} has no labels")
        train, n_dropped = drop_empty(train)
        if n_dropped:
            _say(f"dropped {n_dropped} training sample(s) with no observed modality")
        if train.n_samples == 0:
            raise DataValidationError("no training samples with an observed modality")
        if val is None:
            split = make_split(train, cfg.data.val_fraction, 0.0, seed=self.seed)
            train, val = train.select_ids(split.train), train.select_ids(split.val)
            _say(
                f"no validation data given: using a stratified {len(val)}-sample part of the "
                f"training data (val_fraction={cfg.data.val_fraction}, seed={self.seed})"
            )
        else:
            val, n_val_dropped = drop_empty(val)
            if n_val_dropped:
                _say(f"dropped {n_val_dropped} validation sample(s) with no observed modality")
        if val.y is None and val.n_samples:
            raise DataValidationError(f"validation data {val.name!r} has no labels")
        has_val = val.n_samples > 0
        if not has_val:
            _say("validation part is empty: the last epoch's model is kept")
        if cfg.train.warmup_epochs >= cfg.train.epochs:
            warnings.warn(
                f"train.epochs={cfg.train.epochs} <= train.warmup_epochs="
                f"{cfg.train.warmup_epochs}: warm-up shortened to {cfg.effective_warmup()} "
                "epoch(s) so that the last epoch trains with retrieval on",
                UserWarning,
                stacklevel=2,
            )

        pre = Preprocessor(
            log1p=cfg.data.log1p, standardize=cfg.data.standardize, strict=cfg.data.strict
        ).fit(train)
        train_t = TensorSet.from_data(pre.transform(train))
        val_t = TensorSet.from_data(pre.transform(val)) if has_val else None

        with quiet_lightning():
            L.seed_everything(self.seed, workers=True, verbose=False)
            model = build_model(
                cfg, train.dims, train.n_classes, self.seed, self._encoder_modules()
            )
            if model.completion.needs_pool:  # others never read it: no copy of the data
                model.set_training_pool(train_t.pool_x(), train_t.observed)
            weights = (
                balanced_class_weights(np.asarray(train.y), train.n_classes)
                if cfg.train.class_weights == "balanced"
                else None
            )
            log_prior = class_log_prior(np.asarray(train.y), train.n_classes)
            module = ClassifierModule(
                model, cfg, self.seed, weights, list(train.class_names), log_prior=log_prior
            )
            batch_size = resolve_batch_size(cfg.train.batch_size, len(train_t))
            dm = MultimodalDataModule(
                train_t,
                val_t,
                batch_size=batch_size,
                seed=self.seed,
                eval_batch_size=cfg.runtime.eval_batch_size,
                num_workers=cfg.runtime.num_workers,
            )
            tmp = None
            if run_dir is None:
                tmp = tempfile.mkdtemp(prefix="moe-retriever-")
                root = Path(tmp)
            else:
                root = Path(run_dir)
            try:
                ckpt_cb = checkpoint_callback(root / "checkpoints", has_val)
                hooks: list[L.Callback] = [ckpt_cb, HistoryCSV(root / "history.csv")]
                warmup = cfg.effective_warmup()
                if cfg.train.patience is not None and has_val:
                    hooks.append(WarmupEarlyStopping(warmup, cfg.train.patience))
                hooks += list(callbacks or [])
                fault = KillAfterEpoch.from_env()
                if fault is not None:
                    hooks.append(fault)
                trainer = self._trainer(cfg, root, hooks, has_val, logs=run_dir is not None)
                fit_kw: dict[str, Any] = {}
                if ckpt_path:
                    load_checkpoint(ckpt_path)  # refuse a tampered checkpoint before Lightning
                    fit_kw["ckpt_path"] = str(ckpt_path)
                    if "weights_only" in inspect.signature(trainer.fit).parameters:
                        fit_kw["weights_only"] = True
                try:
                    trainer.fit(module, datamodule=dm, **fit_kw)
                except SystemExit:
                    # Lightning turns Ctrl-C into sys.exit(1); callers need to tell it apart
                    if trainer.interrupted:
                        raise KeyboardInterrupt from None
                    raise
                best = ckpt_cb.best_model_path if has_val else ""
                best = best or ckpt_cb.last_model_path
                state = load_checkpoint(best)
                model.load_state_dict(_fitted_weights(state["state_dict"]))
                best_epoch = int(state["epoch"])
            finally:
                if tmp is not None:
                    shutil.rmtree(tmp, ignore_errors=True)

        model.cpu().eval()
        self.model_ = model
        self.preprocessor_ = pre
        self.config_ = cfg
        self.classes_ = list(train.class_names)
        self.modalities_ = list(train.modalities)
        self.dims_ = dict(train.dims)
        self.feature_names_ = {m: list(v) for m, v in train.feature_names.items()}
        self.history_ = [dict(r) for r in module.history]
        self.best_epoch_ = best_epoch
        self.n_dropped_ = n_dropped
        self.pool_size_ = int(train_t.observed.shape[0])
        self.batch_size_ = batch_size
        self.device_ = torch.device("cuda" if _use_cuda(cfg) else "cpu")
        self.class_log_prior_: Tensor | None = log_prior
        self.extra_members_: list[MoERetrieverClassifier] = []
        self.posthoc_tau_ = float(cfg.train.posthoc_adjust)
        if cfg.train.posthoc_select != "none":
            if has_val:
                self.posthoc_tau_ = self._select_tau(val, cfg.train.posthoc_select)
                _say(
                    f"post-hoc tau {self.posthoc_tau_:g} chosen on validation for "
                    f"{cfg.train.posthoc_select} (train.posthoc_select)"
                )
            else:
                _say("train.posthoc_select: no validation part, tau stays train.posthoc_adjust")
        return self

    def _select_tau(self, val: MultimodalData, metric: str) -> float:
        """The post-hoc tau maximising ``metric`` on the validation part (raw predictions
        adjusted by each tau of :data:`~moe_retriever.training.decision.TAU_GRID`); the fixed
        ``posthoc_adjust`` when the validation labels hold a class training did not."""
        from moe_retriever.training.decision import choose_tau

        fixed = float(self.config_.train.posthoc_adjust)
        y = self._label_index(val)
        if y is None or self.class_log_prior_ is None:
            _say("train.posthoc_select: validation holds a class training has not; tau stays")
            return fixed
        raw = self._predict_proba_one(val, tau=0.0)
        log_p = np.log(np.clip(raw.astype(np.float64), 1e-12, None))
        return choose_tau(y.numpy(), log_p, self.class_log_prior_.numpy(), metric)

    def _fit_ensemble(
        self,
        cfg: TrainConfig,
        train: MultimodalData,
        val: MultimodalData | None,
        run_dir: str | Path | None,
        ckpt_path: str | Path | None,
        callbacks: Sequence[L.Callback] | None = None,
    ) -> MoERetrieverClassifier:
        """``train.ensemble`` members on the same data (see the module docstring); member 0's
        checkpoints and history go to ``run_dir``, member i's to ``run_dir/members/<i>``."""
        if ckpt_path is not None:
            raise ValueError(
                "ckpt_path: resuming is per model; with train.ensemble > 1 refit the ensemble"
            )
        members: list[MoERetrieverClassifier] = []
        for i in range(cfg.train.ensemble):
            member_cfg = cfg.copy()
            member_cfg.train.ensemble = 1
            seed = int(self.seed) if i == 0 else derived_seed(int(self.seed), i)
            member = MoERetrieverClassifier(
                method=self.method, config=member_cfg, seed=seed, encoders=self.encoders
            )
            where = None
            if run_dir is not None:
                where = Path(run_dir) if i == 0 else Path(run_dir) / "members" / str(i)
            extra = callbacks if i == 0 else None
            members.append(member.fit(train, val, run_dir=where, callbacks=extra))
        first = members[0]
        for name, value in vars(first).items():
            if name.endswith("_"):
                setattr(self, name, value)
        self.config_ = cfg
        self.extra_members_ = members[1:]
        return self

    @staticmethod
    def _trainer(
        cfg: TrainConfig,
        root: Path,
        callbacks: list[L.Callback],
        has_val: bool,
        logs: bool = False,
    ) -> L.Trainer:
        rt = cfg.runtime
        deterministic: bool | Literal["warn"] = rt.deterministic
        if rt.deterministic and _use_cuda(cfg):
            deterministic = (
                "warn"  # some CUDA kernels (scatter/index_add) lack a deterministic path
            )
        strategy = rt.strategy
        if strategy in ("ddp", "ddp_spawn"):
            # warm-up epochs leave the retriever unused and a sparse MoE leaves unchosen
            # experts without gradient: DDP must look for unused parameters
            strategy = f"{strategy}_find_unused_parameters_true"
        return L.Trainer(
            max_epochs=cfg.train.epochs,
            accelerator=rt.accelerator,
            devices=rt.devices,
            strategy=strategy,
            precision=rt.precision,  # type: ignore[arg-type]
            deterministic=deterministic,
            enable_progress_bar=rt.progress_bar,
            enable_model_summary=False,
            logger=make_logger(rt.logger, root) if logs else False,
            callbacks=callbacks,
            default_root_dir=str(root),
            num_sanity_val_steps=0,
            log_every_n_steps=1,
            gradient_clip_val=cfg.train.gradient_clip_val,
            use_distributed_sampler=False,
            limit_val_batches=1.0 if has_val else 0,
        )

    # ------------------------------------------------------------------ inference
    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise RuntimeError("this MoERetrieverClassifier is not fitted yet; call fit() first")

    def _tensors(self, data: MultimodalData) -> TensorSet:
        self._check_fitted()
        _require_data(data, "data")
        if list(data.modalities) != self.modalities_:
            if set(data.modalities) != set(self.modalities_):
                raise DataValidationError(
                    f"data {data.name!r} has modalities {data.modalities}; the model was "
                    f"trained on {self.modalities_}"
                )
            order = [data.modalities.index(m) for m in self.modalities_]
            data = data.replace(
                modalities=list(self.modalities_),
                X={m: data.X[m] for m in self.modalities_},
                observed=data.observed[:, order],
                feature_names={m: data.feature_names[m] for m in self.modalities_},
            )
        check_predictable(data)
        return TensorSet.from_data(self.preprocessor_.transform(data))

    def _run(self, data: MultimodalData, fn: Callable[[Any, dict[str, Any]], Any]) -> list[Any]:
        """Apply ``fn(model, batch)`` to unshuffled batches on ``device_``, in eval mode."""
        tensors = self._tensors(data)
        _apply_threads(self.config_)
        if len(tensors) == 0:
            return []
        model = self.model_.to(self.device_).eval()
        results = []
        with torch.inference_mode():
            for batch in eval_loader(tensors, self.config_.runtime.eval_batch_size):
                batch = {
                    "x": {m: v.to(self.device_) for m, v in batch["x"].items()},
                    "observed": batch["observed"].to(self.device_),
                    "keys": batch["keys"].to(self.device_),
                }
                results.append(fn(model, batch))
        return results

    def _forward(self, model: Any, batch: dict[str, Any]) -> Any:
        return model(batch["x"], batch["observed"], sample_keys=batch["keys"], retrieve=True)

    def predict_proba(self, data: MultimodalData) -> np.ndarray:
        """Class probabilities (N, C); column j is ``classes_[j]``. An ensemble
        (``train.ensemble > 1``) returns the mean of its members' probabilities."""
        proba = self._predict_proba_one(data)
        extra = getattr(self, "extra_members_", [])
        if not extra:
            return proba
        total = proba.astype(np.float64)
        for member in extra:
            total += member.predict_proba(data)
        return (total / (1 + len(extra))).astype(np.float32)

    def _predict_logits(
        self, model: Any, batch: dict[str, Any], tau: float | None = None
    ) -> Tensor:
        """The logits predictions are made from: post-hoc adjusted by ``tau`` (default
        ``posthoc_tau_``: ``train.posthoc_adjust``, or the tau ``train.posthoc_select`` chose)
        with the training split's class prior."""
        logits = self._forward(model, batch).logits.float()
        if tau is None:
            tau = getattr(self, "posthoc_tau_", self.config_.train.posthoc_adjust)
        return adjust_logits(logits, self.class_log_prior_, -tau)

    def _predict_proba_one(self, data: MultimodalData, tau: float | None = None) -> np.ndarray:
        parts = self._run(
            data, lambda m, b: torch.softmax(self._predict_logits(m, b, tau), 1).cpu()
        )
        if not parts:
            return np.zeros((0, len(self.classes_)), dtype=np.float32)
        return torch.cat(parts).numpy()

    def predict(self, data: MultimodalData) -> np.ndarray:
        """Predicted class codes (N,) (index into ``classes_``)."""
        return self.predict_proba(data).argmax(axis=1)

    def retrieve(self, data: MultimodalData) -> np.ndarray:
        """Completed tokens (N, M, P, D) float32: encoder tokens where observed, retrieved ones
        where missing (what the fusion model sees)."""
        parts = self._run(data, lambda m, b: self._forward(m, b).tokens.float().cpu())
        return self._stack(parts)

    def encode(self, data: MultimodalData) -> np.ndarray:
        """Encoder tokens (N, M, P, D) of observed entries, zeros for missing ones."""
        parts = self._run(data, lambda m, b: m.encode(b["x"], b["observed"]).float().cpu())
        return self._stack(parts)

    def _stack(self, parts: list[torch.Tensor]) -> np.ndarray:
        if not parts:
            P, D = self.config_.model.n_tokens, self.config_.model.dim
            return np.zeros((0, len(self.modalities_), P, D), dtype=np.float32)
        return torch.cat(parts).numpy().astype(np.float32, copy=False)

    def routing_stats(self, data: MultimodalData) -> dict[str, Any]:
        """Router usage on ``data``: per target modality and observed combination, how many
        routed tokens there were and how often each candidate was chosen (mean gate weight).

        ``{"usage": {target: {combination: {"tokens", "experts", "mean_weight"}}},
        "fallback": {reason: count}}``; ``usage`` is empty for methods that do not route.
        """
        from moe_retriever.completion.routing import merge_routing_info

        self._check_fitted()
        infos = self._run(data, lambda m, b: self._forward(m, b).info)
        completion = getattr(self.model_, "completion", None)
        return merge_routing_info(
            infos,
            self.modalities_,
            getattr(completion, "n_candidates", None),
            getattr(completion, "n_shared", None),
        )

    def interpretation(self, data: MultimodalData) -> dict[str, Any]:
        """What the fitted parts say about ``data``, method-specific but asked for without
        knowing the method: ``{"completion": <Completion.summarize>, "head":
        <Head.summarize>}`` (None where a part has nothing to say). For moe-retriever the
        completion's summary is its router usage; heads with interpretable outputs (I2MoE's
        interaction weights...) summarise them overall, per class (true labels of ``data``
        when it has them) and per observed combination. Member 0 of an ensemble."""
        self._check_fitted()
        model = self.model_
        if (
            type(model.completion).summarize is Completion.summarize
            and type(model.head).summarize is Head.summarize
        ):  # neither part has anything to say: no pass over the data
            return {"completion": None, "head": None}
        infos = self._run(data, lambda m, b: self._forward(m, b).info)
        comp = model.completion.summarize([i.get("completion", {}) for i in infos])
        interp: dict[str, list[Tensor]] = {}
        for info in infos:
            for key, value in (info.get("head", {}).get("interpret") or {}).items():
                interp.setdefault(key, []).append(torch.as_tensor(value).detach().cpu())
        head = None
        if interp:
            cat = {k: torch.cat(v) for k, v in interp.items()}
            head = model.head.summarize(cat, self._label_index(data), self._tensors(data).observed)
        return {"completion": comp, "head": head}

    def explains(self) -> bool:
        """Whether the fitted head has per-sample interpretable outputs for :meth:`explain`
        (it names their axes, :meth:`~moe_retriever.heads.Head.interpret_axes`, or summarises
        them, :meth:`~moe_retriever.heads.Head.summarize`); known without a pass over data."""
        self._check_fitted()
        head = type(self.model_.head)
        named = head.interpret_axes is not Head.interpret_axes
        return named or head.summarize is not Head.summarize

    def explain(self, data: MultimodalData) -> Any:
        """The head's per-sample interpretable outputs on ``data`` as a ``pandas.DataFrame``,
        one row per sample keyed by its id (column ``id``), e.g. I2MoE's interaction weights
        ``weights_U_<modality>``, ``weights_S``, ``weights_R``. A (N, K) output gives K columns
        named by the head's :meth:`~moe_retriever.heads.Head.interpret_axes` (numbered when
        unnamed), a (N, K, C) one K * C columns ``<key>_<name>_<class>``. Only the ``id``
        column for heads without such outputs. Member 0 of an ensemble."""
        import pandas as pd

        self._check_fitted()
        parts = self._run(data, lambda m, b: self._forward(m, b).info["head"].get("interpret"))
        frame = pd.DataFrame({"id": list(data.ids)})
        keys = list(parts[0] or {}) if parts else []
        axes = self.model_.head.interpret_axes()
        columns: dict[str, np.ndarray] = {}
        for key in keys:
            value = torch.cat([p[key].float().cpu() for p in parts]).numpy()
            if value.ndim == 1:
                columns[key] = value
                continue
            names = axes.get(key) or [str(k) for k in range(value.shape[1])]
            for k, name in enumerate(names):
                if value.ndim == 2:
                    columns[f"{key}_{name}"] = value[:, k]
                else:
                    for c, cls in enumerate(self.classes_):
                        columns[f"{key}_{name}_{cls}"] = value[:, k, c]
        return pd.concat([frame, pd.DataFrame(columns)], axis=1)

    def write_report(self, data: MultimodalData, out_dir: str | Path) -> list[Path]:
        """:meth:`interpretation` of ``data`` written by the parts' ``report`` hooks under
        ``out_dir`` (tables, plots); returns the files written."""
        summary = self.interpretation(data)
        out = Path(out_dir)
        files: list[Path] = []
        if summary["completion"] is not None:
            files += self.model_.completion.report(summary["completion"], out)
        if summary["head"] is not None:
            files += self.model_.head.report(summary["head"], out)
        return files

    def _label_index(self, data: MultimodalData) -> Tensor | None:
        """``data``'s labels as indices into ``classes_`` (None if it has none, or holds a
        label the model does not know)."""
        if data.y is None:
            return None
        lookup = {str(c): i for i, c in enumerate(self.classes_)}
        names = [str(n) for n in data.class_names]
        try:
            return torch.tensor([lookup[names[int(v)]] for v in np.asarray(data.y)])
        except (KeyError, IndexError):
            return None

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Write a folder: config.yaml, estimator.json, preprocessor.json, model.pt (weights and
        the preprocessed training pool the completion method draws from)."""
        self._check_fitted()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.config_.to_yaml(path / "config.yaml")
        meta = {
            "format_version": FORMAT_VERSION,
            "method": self.method,
            # modalities whose encoder was a built module (pass it again to ``load``)
            "module_encoders": sorted(self._encoder_modules()),
            "seed": self.seed,
            "classes": self.classes_,
            "modalities": self.modalities_,
            "dims": self.dims_,
            "feature_names": self.feature_names_,
            "pool_size": self.pool_size_,
            "best_epoch": self.best_epoch_,
            "n_dropped": self.n_dropped_,
            "batch_size": getattr(self, "batch_size_", None),
            "history": self.history_,
            "class_log_prior": (
                None if self.class_log_prior_ is None else self.class_log_prior_.tolist()
            ),
            "posthoc_tau": getattr(self, "posthoc_tau_", self.config_.train.posthoc_adjust),
        }
        (path / "estimator.json").write_text(json.dumps(meta, indent=2, default=float))
        (path / "preprocessor.json").write_text(json.dumps(self.preprocessor_.to_dict()))
        # the state dict holds the training pool too (persistent buffers of the model)
        torch.save(self.model_.state_dict(), path / "model.pt")
        for i, member in enumerate(getattr(self, "extra_members_", []), start=1):
            member.save(path / "members" / str(i))
        return path

    @classmethod
    def load(
        cls,
        path: str | Path,
        device: str | None = None,
        encoders: dict[str, torch.nn.Module] | None = None,
    ) -> MoERetrieverClassifier:
        """Restore an estimator written by :meth:`save` (predictions are identical).
        ``encoders``: the built encoder modules the model was fitted with, if any (encoders
        given by name, import path or class are rebuilt from the saved config)."""
        path = Path(path)
        if not (path / "estimator.json").is_file():
            raise FileNotFoundError(f"{str(path)!r} holds no saved model (estimator.json missing)")
        meta = json.loads((path / "estimator.json").read_text())
        version = int(meta.get("format_version", 1))
        if version != FORMAT_VERSION:
            raise ValueError(
                f"{str(path)!r} was saved in format {version}; this version reads format "
                f"{FORMAT_VERSION} (the model's layout changed): refit and save again"
            )
        needed = sorted(set(meta.get("module_encoders", [])) - set(encoders or {}))
        if needed:
            raise ValueError(
                f"{str(path)!r} was fitted with built encoder modules for {needed}: pass them "
                "again, load(path, encoders={...}) (their weights come from the saved model)"
            )
        cfg = TrainConfig.from_yaml(path / "config.yaml")
        est = cls(method=meta["method"], config=cfg, seed=int(meta["seed"]), encoders=encoders)
        model = build_model(
            cfg,
            {m: int(d) for m, d in meta["dims"].items()},
            len(meta["classes"]),
            int(meta["seed"]),
            est._encoder_modules(),
        )
        n = int(meta["pool_size"])
        state = load_checkpoint(path / "model.pt")  # weights only, one line if refused
        model.load_state_dict(state)
        model.eval()
        est.model_ = model
        est.preprocessor_ = Preprocessor.from_dict(
            json.loads((path / "preprocessor.json").read_text())
        )
        est.config_ = cfg
        est.classes_ = list(meta["classes"])
        est.modalities_ = list(meta["modalities"])
        est.dims_ = {m: int(d) for m, d in meta["dims"].items()}
        est.feature_names_ = meta.get("feature_names", {})
        est.history_ = meta.get("history", [])
        est.best_epoch_ = meta.get("best_epoch")
        est.n_dropped_ = meta.get("n_dropped", 0)
        if meta.get("batch_size") is not None:  # absent in saves from before batch ``auto``
            est.batch_size_ = int(meta["batch_size"])
        est.pool_size_ = n
        prior = meta.get("class_log_prior")  # absent in saves from before logit adjustment
        est.class_log_prior_ = None if prior is None else torch.tensor(prior, dtype=torch.float32)
        # absent in saves from before train.posthoc_select: the config's tau
        est.posthoc_tau_ = float(meta.get("posthoc_tau", cfg.train.posthoc_adjust))
        est.device_ = (
            torch.device(device) if device else torch.device("cuda" if _use_cuda(cfg) else "cpu")
        )
        if cfg.train.ensemble > 1:
            est.extra_members_ = [
                cls.load(path / "members" / str(i), device, encoders)
                for i in range(1, cfg.train.ensemble)
            ]
        return est
