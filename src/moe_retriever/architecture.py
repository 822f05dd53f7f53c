"""The architecture settings shared by a model's parts (token grid, widths, fusion depth)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class ModelConfig:
    """Architecture of :class:`MultimodalClassifier`. METHOD.md's reference values are P=16
    tokens, D=128, 4 heads; the defaults are P=4, D=64 (docs/DEFAULTS.md section 9: level with
    P=16/D=128 on every dataset measured, 3-4x cheaper per fit)."""

    n_tokens: int = 4  # P: tokens per modality (METHOD.md reference: 16; DEFAULTS.md section 9)
    dim: int = 64  # D: token width (reference: 128)
    # encoder of every modality without an entry in ``encoders``: a registered name
    # (``moe-retriever list`` shows them) or an import path "package.module:Class"
    encoder: str = "mlp"
    encoder_hidden: int = 256  # default ``hidden`` option of encoders that take one
    encoder_options: dict[str, Any] = field(default_factory=dict)  # options of ``encoder``
    # per-modality encoders: {modality: name} or {modality: {name: ..., <option>: ...}}
    encoders: dict[str, Any] = field(default_factory=dict)
    n_heads: int = 4
    fusion_layers: int = 1
    fusion_moe: bool = False  # sparse MoE feed-forward in the fusion blocks
    fusion_experts: int = 4
    fusion_top_k: int = 2
    ffn_mult: int = 2  # feed-forward hidden width = ffn_mult * dim
    dropout: float = 0.1
    head_hidden: int = 128
    balance_weight: float = 1e-2  # weight of all MoE balance losses in aux_loss
    noisy_gating: bool = True  # noisy top-k gating in the fusion MoE (training only)
    # Retrieval self-supervision (training only, retrieval on, learning completion methods):
    # probability of hiding each observed entry of a sample with >= 2 observed (never the last)
    retrieval_dropout: float = 0.3
    # how retrieval_dropout follows the training pool's missingness (docs/DEFAULTS.md sections
    # 10-11): "off" (or false): every modality at retrieval_dropout; "modality" (or true): modality
    # m at min(retrieval_dropout, the share of training samples that miss m); "pool": every
    # modality at min(retrieval_dropout, the share of the pool's (sample, modality) entries that
    # are missing), so a cohort that misses little is trained with little hiding (the default
    # since issue 22; wherever 30 % or more of the entries are missing it is "off" bit for bit)
    retrieval_dropout_match: bool | str = "pool"
    # what the head sees for an entry hidden by self-supervision: "completed" (its retrieved
    # tokens: the head also learns from retrieved inputs) or "real" (the encoder's tokens of
    # the real input: the retrieved ones only train the retriever through the alignment loss)
    hidden_head_input: str = "completed"
    # weight of the alignment loss (1 - cosine) of hidden entries' completed tokens to the
    # encoder's (detached) tokens of their true inputs
    align_weight: float = 5.0
    # the alignment's base term: "cosine" (1 - cosine, per token: scale-free, the default) or
    # "relative_mse" (squared error over the spread of the true tokens around their modality's
    # batch mean: 1 - R² in token space, so a completion must match the tokens' scale and
    # offset too, and a constant one scores no better than the batch mean; docs/DEFAULTS.md)
    align_loss: str = "cosine"
    # weight (inside align_weight) of a contrastive term: each hidden entry's completion must be
    # closer to its own sample's encoder tokens than to other samples' of that modality in the
    # batch (InfoNCE at align_temperature); the cosine term alone can be won by completing
    # every sample alike (docs/DEFAULTS.md section 10); 0 = off
    align_contrast: float = 0.0
    align_temperature: float = 0.1
    # TabM-style efficient ensemble inside one model (heads/ensemble.py): the head's MLP
    # classifier becomes k BatchEnsemble members sharing its weights, trained on the mean of
    # their losses, predicting the mean of their probabilities; 1 = the single model
    ensemble_k: int = 1
    # completed mode: add a learned observation-status embedding to each modality's tokens in
    # the fusion (does the data have this modality? entries hidden by retrieval
    # self-supervision count as observed), so missingness that carries signal is not lost
    # behind a plausible completed token (docs/DEFAULTS.md section 10)
    status_embedding: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


__all__ = ["ModelConfig"]
