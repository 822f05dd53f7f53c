"""Typed training configuration: dataclasses with defaults, YAML files, dotted overrides.

One :class:`TrainConfig` describes a whole run::

    method: moe-retriever        # a method = a preset of parts (moe_retriever.presets)
    seeds: [0, 1, 2]             # one model per seed; metrics aggregate to mean ± std
    model: {...}                 # moe_retriever.architecture.ModelConfig (tokens, width,
                                 # encoder(s) by name or import path, ...)
    completion: {...}            # options of the completion part (k, n_candidates, ...);
                                 # with ``name: <completion>`` another completion than the preset's
    head: {...}                  # options of the head part; ``name: <head>`` picks another head
    optim: {optimizer, lr, weight_decay}
    train: {epochs, warmup_epochs, batch_size, patience, monitor, class_weights, ...}
    data:  {val_fraction, test_fraction, split_seed, split_file, log1p, standardize, strict,
            modalities}
    runtime: {accelerator, devices, strategy, precision, deterministic, progress_bar, ...}

The dataclass defaults are the single source of truth (``configs/default.yaml`` is a dump of
them). ``TrainConfig.from_dict`` / ``from_yaml`` check every key and value type; an unknown
key or a value of the wrong type raises ``ValueError`` with one line naming the key and the
valid keys. ``apply_overrides(cfg, ["optim.lr=3e-4", "train.epochs=10"])`` applies command-line
``--set`` overrides with the same checks (values are parsed as YAML, so ``[0, 1]``, ``true`` and
``null`` work).
"""

from __future__ import annotations

import copy
import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from moe_retriever.architecture import ModelConfig
from moe_retriever.options import build_dataclass as _build_dataclass
from moe_retriever.options import coerce as _coerce
from moe_retriever.presets import Parts, resolve_parts
from moe_retriever.training.decision import SELECT_METRICS

#: metrics the best epoch can be chosen on; ``val_loss`` is minimised, the others maximised
MONITORS: tuple[str, ...] = (
    "val_loss",
    "val_accuracy",
    "val_balanced_accuracy",
    "val_macro_f1",
    "val_auroc",
)

#: model sizes that must be >= 1 (checked by :meth:`TrainConfig.validate`)
_POSITIVE_MODEL_KEYS = (
    "n_tokens",
    "dim",
    "encoder_hidden",
    "n_heads",
    "fusion_layers",
    "fusion_experts",
    "fusion_top_k",
    "ffn_mult",
    "head_hidden",
    "ensemble_k",
)


@dataclass
class OptimConfig:
    """Optimiser settings (Adam as in the reference; AdamW for decoupled weight decay)."""

    optimizer: Literal["adam", "adamw"] = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0


#: ``train.batch_size: auto``: SMALL_BATCH below AUTO_BATCH_ROWS training samples, else LARGE_BATCH
SMALL_BATCH, LARGE_BATCH, AUTO_BATCH_ROWS = 16, 64, 1000


def resolve_batch_size(batch_size: int | str, n_train: int) -> int:
    """The training batch size of ``train.batch_size`` for ``n_train`` training samples."""
    if batch_size == "auto":
        return SMALL_BATCH if n_train < AUTO_BATCH_ROWS else LARGE_BATCH
    return int(batch_size)


@dataclass
class TrainerConfig:
    """Schedule and model selection.

    ``warmup_epochs``: epochs with missing modalities zero-filled and the retriever off
    (METHOD.md); when ``epochs <= warmup_epochs`` the warm-up is shortened to ``epochs - 1``
    with a warning, so the last epoch always trains with retrieval on. The best epoch is chosen
    among post-warm-up epochs on ``monitor``; ``patience`` (post-warm-up epochs without
    improvement, ``null`` = off) stops early.

    ``select_smoothing`` (a in [0, 1)): choose the epoch on an exponential moving average of
    the monitored metric over post-warm-up epochs, ``s_t = a * s_{t-1} + (1 - a) * v_t``
    (``s`` = ``v`` at the first post-warm-up epoch); 0 = the raw metric. On a small validation
    split the raw metric jumps from epoch to epoch and the arg-max is partly chance.
    ``weight_average``: ``ema`` keeps an exponential moving average of the weights
    (``ema_decay`` per optimiser step) from the first post-warm-up step on; validation, the
    selected checkpoint and the fitted model use the averaged weights.
    ``ensemble``: N > 1 fits N models (member 0 with the run's seed, member i with
    ``derived_seed(seed, i)``) on the same data and averages their class probabilities;
    N times the fit time.

    Class imbalance (Menon et al., ICLR 2021, "Long-tail learning via logit adjustment"), with
    ``pi`` the class frequencies of the training split: ``class_weights: balanced`` weights the
    cross-entropy by ``n / (C * count_c)``; ``logit_adjust`` (tau >= 0) trains on the
    logit-adjusted loss ``CE(logits + tau * log pi, y)`` and predicts with the raw logits;
    ``posthoc_adjust`` (tau >= 0) predicts (and validates) with ``logits - tau * log pi``.
    The default is post-hoc adjustment with tau = 1 (the Bayes rule for balanced error): the
    training and the epoch selection (on validation loss) are those of plain cross-entropy, only
    the decision moves towards the small classes; docs/DEFAULTS.md section 6 has the
    measurement. ``posthoc_adjust: 0`` gives the unadjusted predictions.
    ``posthoc_select`` (``none`` by default, or ``balanced_accuracy`` / ``macro_f1``): after
    the fit, tau is chosen on the validation part from 0 to 3 in steps of 0.1 to maximise that
    metric (ties to the tau nearest 1) and replaces ``posthoc_adjust`` for predictions
    (``posthoc_tau_`` on the fitted estimator; each member of an ensemble chooses its own):
    the decision for the metric the user reports (:mod:`moe_retriever.training.decision`).
    """

    epochs: int = 30
    warmup_epochs: int = 5
    batch_size: int | Literal["auto"] = "auto"
    patience: int | None = 10
    monitor: str = "val_loss"
    class_weights: Literal["none", "balanced"] = "none"
    logit_adjust: float = 0.0
    posthoc_adjust: float = 1.0
    posthoc_select: Literal["none", "balanced_accuracy", "macro_f1"] = "none"
    gradient_clip_val: float | None = None
    select_smoothing: float = 0.0
    weight_average: Literal["none", "ema"] = "ema"
    ema_decay: float = 0.99
    ensemble: int = 1


@dataclass
class DataConfig:
    """Split and preprocessing. The Preprocessor is always fitted on the training split only."""

    val_fraction: float = 0.15
    test_fraction: float = 0.2
    #: seed of the train/val/test split (shared by all model seeds of a run)
    split_seed: int = 0
    #: a split JSON (``Split.save``) to use instead of drawing one
    split_file: str | None = None
    #: Preprocessor log1p option: "auto", true/false, or a list of modality names
    log1p: str | bool | list[str] = "auto"
    standardize: bool = True
    #: strict=True: NaNs inside observed rows raise instead of being imputed
    strict: bool = False
    #: read only these modalities of the data (``--modalities``); null = all it has (of an
    #: ADNI / MIMIC-IV folder, those whose folder or file exists)
    modalities: list[str] | None = None


@dataclass
class RuntimeConfig:
    """Hardware and engine settings passed to ``lightning.Trainer``."""

    accelerator: str = "auto"
    devices: int = 1
    strategy: str = "auto"
    precision: str = "32-true"
    deterministic: bool = True
    progress_bar: bool = True
    num_workers: int = 0
    #: batch size for prediction / evaluation passes
    eval_batch_size: int = 256
    #: Lightning logger of a run folder: csv (logs/metrics.csv + hparams.yaml), tensorboard,
    #: mlflow (when installed) or none
    logger: Literal["none", "csv", "tensorboard", "mlflow"] = "csv"
    #: CPU threads for torch (``torch.set_num_threads``); null keeps torch's default. Small
    #: models on a busy machine run many times faster with 1 (no thread oversubscription).
    threads: int | None = None


@dataclass
class TrainConfig:
    """Everything a training run needs besides the data (see the module docstring)."""

    method: str = "moe-retriever"
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    model: ModelConfig = field(default_factory=ModelConfig)
    completion: dict[str, Any] = field(default_factory=dict)
    head: dict[str, Any] = field(default_factory=dict)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainerConfig = field(default_factory=TrainerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    # ---------------------------------------------------------------- construction
    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> TrainConfig:
        """Build from a nested dict; unknown keys and wrong types raise ``ValueError``."""
        cfg = _build_dataclass(cls, d or {}, prefix="")
        cfg.validate()
        return cfg

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file {str(path)!r} not found")
        try:
            d = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ValueError(f"config file {str(path)!r} is not valid YAML: {exc}") from None
        if not isinstance(d, dict):
            raise ValueError(f"config file {str(path)!r} must hold a mapping at the top level")
        return cls.from_dict(d)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self, path: str | Path | None = None) -> str:
        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            Path(path).write_text(text)
        return text

    def copy(self) -> TrainConfig:
        return copy.deepcopy(self)

    # ---------------------------------------------------------------- checks
    def validate(self) -> None:
        """Value checks beyond types; one-line ``ValueError`` naming the key."""
        t = self.train
        if t.epochs < 1:
            raise ValueError(f"train.epochs must be >= 1, got {t.epochs}")
        if t.warmup_epochs < 0:
            raise ValueError(f"train.warmup_epochs must be >= 0, got {t.warmup_epochs}")
        if t.batch_size != "auto" and t.batch_size < 1:
            raise ValueError(f"train.batch_size must be >= 1, got {t.batch_size}")
        if t.patience is not None and t.patience < 1:
            raise ValueError(f"train.patience must be >= 1 or null, got {t.patience}")
        if not 0.0 <= t.select_smoothing < 1.0:
            raise ValueError(f"train.select_smoothing must be in [0, 1), got {t.select_smoothing}")
        if not 0.0 < t.ema_decay < 1.0:
            raise ValueError(f"train.ema_decay must be in (0, 1), got {t.ema_decay}")
        if t.ensemble < 1:
            raise ValueError(f"train.ensemble must be >= 1, got {t.ensemble}")
        for key in ("logit_adjust", "posthoc_adjust"):
            if getattr(t, key) < 0:
                raise ValueError(f"train.{key} must be >= 0, got {getattr(t, key)}")
        if t.posthoc_select not in ("none", *SELECT_METRICS):
            raise ValueError(
                f"train.posthoc_select must be one of none, {', '.join(SELECT_METRICS)}, got "
                f"{t.posthoc_select!r}"
            )
        if t.monitor not in MONITORS:
            raise ValueError(f"train.monitor {t.monitor!r} unknown; choose one of {list(MONITORS)}")
        for key in _POSITIVE_MODEL_KEYS:  # model.dim=0 would fail deep inside torch
            value = getattr(self.model, key, None)
            if isinstance(value, int) and value < 1:
                raise ValueError(f"model.{key} must be >= 1, got {value}")
        dim, heads = self.model.dim, self.model.n_heads
        if dim % heads:
            raise ValueError(f"model.dim ({dim}) must be a multiple of model.n_heads ({heads})")
        d = self.data
        for key in ("val_fraction", "test_fraction"):
            v = getattr(d, key)
            if not 0.0 < v < 1.0:
                raise ValueError(f"data.{key} must be in (0, 1), got {v}")
        if d.val_fraction + d.test_fraction >= 1.0:
            raise ValueError("data.val_fraction + data.test_fraction must be < 1")
        if self.optim.lr <= 0:
            raise ValueError(f"optim.lr must be > 0, got {self.optim.lr}")
        if self.runtime.devices < 1:
            raise ValueError(f"runtime.devices must be >= 1, got {self.runtime.devices}")
        if self.runtime.threads is not None and self.runtime.threads < 1:
            raise ValueError(f"runtime.threads must be >= 1 or null, got {self.runtime.threads}")
        if not self.seeds:
            raise ValueError("seeds must list at least one seed")

    def parts(self) -> Parts:
        """The method's parts (completion, head) with their options checked: an unknown
        method, part or option raises a one-line ``ValueError`` naming the valid ones."""
        return resolve_parts(self.method, self.completion, self.head)

    def effective_warmup(self) -> int:
        """Warm-up epochs actually used: at most ``epochs - 1`` (METHOD.md defect 8)."""
        return max(0, min(self.train.warmup_epochs, self.train.epochs - 1))

    # ---------------------------------------------------------------- overrides
    def set(self, key: str, value: Any) -> None:
        """Set a dotted key (``"optim.lr"``) with type checking; raises ``ValueError``."""
        parts = key.split(".")
        obj: Any = self
        path = ""
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(obj, dict):
                if last:
                    obj[part] = value
                    return
                obj = obj.setdefault(part, {})
                path += part + "."
                continue
            names = [f.name for f in dataclasses.fields(obj)]
            if part not in names:
                where = f" under {path[:-1]!r}" if path else ""
                raise ValueError(
                    f"unknown config key {key!r}; valid keys{where}: {', '.join(names)}"
                )
            hints = typing.get_type_hints(type(obj))
            if last:
                setattr(obj, part, _coerce(value, hints[part], path + part))
                return
            child = getattr(obj, part)
            if not (dataclasses.is_dataclass(child) or isinstance(child, dict)):
                raise ValueError(f"config key {path + part!r} is a value, not a section")
            obj = child
            path += part + "."


def apply_overrides(cfg: TrainConfig, overrides: list[str] | None) -> TrainConfig:
    """Apply ``key=value`` strings (values parsed as YAML); returns a validated copy."""
    out = cfg.copy()
    for item in overrides or []:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not of the form key=value (e.g. optim.lr=3e-4)")
        key, raw = item.split("=", 1)
        key = key.strip()
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        out.set(key, value)
    out.validate()
    return out


def leaf_keys(cfg: Any = None, prefix: str = "") -> list[str]:
    """All dotted keys of the config tree (dict-valued sections count as one key)."""
    cfg = cfg if cfg is not None else TrainConfig()
    keys: list[str] = []
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if dataclasses.is_dataclass(v):
            keys += leaf_keys(v, prefix + f.name + ".")
        else:
            keys.append(prefix + f.name)
    return keys


def resolve_key(name: str, cfg: TrainConfig | None = None) -> str:
    """Turn a short or ``__``-separated name into a dotted key.

    ``"optim__lr"`` -> ``"optim.lr"``; ``"epochs"`` -> ``"train.epochs"`` (a leaf name that
    is unique in the tree). Used by the estimator's ``**overrides``.
    """
    dotted = name.replace("__", ".")
    keys = leaf_keys(cfg)
    if dotted in keys or dotted.split(".")[0] in ("completion", "head"):
        return dotted
    matches = [k for k in keys if k.split(".")[-1] == dotted]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise ValueError(f"option {name!r} is ambiguous: use one of {matches}")
    raise ValueError(f"unknown option {name!r}; valid keys: {', '.join(keys)}")


def default_config_path(name: str = "default") -> Path:
    """Path of a config shipped with the package (``default``, ``demo``)."""
    return Path(__file__).resolve().parent.parent / "configs" / f"{name}.yaml"
