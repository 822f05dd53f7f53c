"""Encoders: shapes, the patching rule of METHOD.md, and the factory."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from moe_retriever.encoders import MLPEncoder, PatchEncoder, create_encoder


@pytest.mark.parametrize("features", [1, 15, 16, 17, 64, 250])
def test_patch_encoder_shape(features: int) -> None:
    enc = PatchEncoder(features, n_tokens=16, dim=8)
    assert enc(torch.randn(5, features)).shape == (5, 16, 8)
    assert enc.patch_size == -(-features // 16)


def test_patch_encoder_pads_and_shares_one_linear() -> None:
    torch.manual_seed(0)
    enc = PatchEncoder(10, n_tokens=4, dim=3)  # patch size 3, 2 zero features of padding
    x = torch.randn(2, 10)
    padded = F.pad(x, (0, 2)).reshape(2, 4, 3)
    expected = padded @ enc.proj.weight.T + enc.proj.bias
    torch.testing.assert_close(enc(x), expected)
    # the last patch only sees features 9, 10 (0-based) and padding
    x2 = x.clone()
    x2[:, :9] = 0
    assert torch.allclose(enc(x2)[:, :3], enc.proj.bias.expand(2, 3, 3))


def test_patch_encoder_rejects_wrong_width() -> None:
    with pytest.raises(ValueError, match=r"expects 10 features"):
        PatchEncoder(10, 4, 3)(torch.randn(2, 11))


def test_mlp_encoder_shape() -> None:
    enc = MLPEncoder(33, n_tokens=4, dim=6, hidden=12)
    assert enc(torch.randn(7, 33)).shape == (7, 4, 6)


def test_create_encoder_by_name_with_typed_options() -> None:
    assert isinstance(create_encoder("patch", 20, 4, 8), PatchEncoder)
    mlp = create_encoder("mlp", 20, 4, 8, hidden="9", dropout=0.1)  # YAML strings coerced
    assert isinstance(mlp, MLPEncoder) and mlp.net[0].out_features == 9
    with pytest.raises(ValueError, match=r"unknown encoder 'cnn'; known: .*mlp, patch"):
        create_encoder("cnn", 20, 4, 8)
    with pytest.raises(ValueError, match=r"encoder 'patch' has no option 'hidden'; valid options"):
        create_encoder("patch", 20, 4, 8, hidden=99)
    with pytest.raises(ValueError, match=r"'mlp.hidden': 'wide' is not an integer"):
        create_encoder("mlp", 20, 4, 8, hidden="wide")


def test_encoder_by_import_path() -> None:
    enc = create_encoder("moe_retriever.encoders.tabular:MLPEncoder", 5, 2, 4, hidden=3)
    assert isinstance(enc, MLPEncoder) and enc(torch.randn(2, 5)).shape == (2, 2, 4)
    with pytest.raises(ValueError, match=r"is not a encoder|must be a subclass"):
        create_encoder("moe_retriever.registry:Registry", 5, 2, 4)
    with pytest.raises(ValueError, match=r"cannot import module 'no_such_pkg.x'"):
        create_encoder("no_such_pkg.x:Enc", 5, 2, 4)
