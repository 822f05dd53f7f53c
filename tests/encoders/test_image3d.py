"""The cnn3d encoder: masked voxel vectors back into their volume, a small 3-D CNN, P x D."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from moe_retriever.architecture import ModelConfig
from moe_retriever.datasets.layout_fixtures import adni_mask
from moe_retriever.encoders import Volume3DEncoder, create_encoder
from moe_retriever.encoders.image3d import OptionalDependencyError, load_mask, token_grid
from moe_retriever.model import MultimodalClassifier

VOLUME = (12, 14, 12)


@pytest.fixture
def mask_file(tmp_path: Path) -> tuple[Path, int]:
    mask = adni_mask(VOLUME)
    path = tmp_path / "mask.npy"
    np.save(path, mask)
    return path, int(mask.sum())


def test_scatter_puts_voxels_back(mask_file: tuple[Path, int]) -> None:
    path, n_vox = mask_file
    enc = create_encoder("cnn3d", n_vox, 8, 16, mask=str(path))
    x = torch.arange(1, n_vox + 1, dtype=torch.float32)[None]
    vol = enc.to_volume(x)[0, 0].numpy()
    mask = np.load(path)
    np.testing.assert_array_equal(vol[mask], x[0].numpy())  # C order, as ravel() cut them
    assert (vol[~mask] == 0).all()


def test_gradient_reaches_every_parameter_and_a_step_trains(mask_file: tuple[Path, int]) -> None:
    path, n_vox = mask_file
    torch.manual_seed(0)
    enc = create_encoder("cnn3d", n_vox, 4, 16, mask=str(path), channels=4, blocks=2)
    head = torch.nn.Linear(4 * 16, 2)
    x = torch.randn(6, n_vox)
    y = torch.tensor([0, 1, 0, 1, 0, 1])
    params = list(enc.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(params, lr=1e-2)
    before = [p.detach().clone() for p in enc.parameters()]
    loss = torch.nn.functional.cross_entropy(head(enc(x).flatten(1)), y)
    loss.backward()
    for name, p in enc.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    opt.step()
    assert all(not torch.equal(b, p) for b, p in zip(before, enc.parameters()))
    assert enc(x).shape == (6, 4, 16)


def test_masks_from_nifti_and_volume(tmp_path: Path) -> None:
    nib = pytest.importorskip("nibabel")
    mask = adni_mask(VOLUME)
    labels = np.where(mask, 150, 7).astype(np.int16)
    path = tmp_path / "template.nii.gz"
    nib.save(nib.Nifti1Image(labels, np.eye(4)), str(path))
    np.testing.assert_array_equal(load_mask(str(path), 150), mask)
    assert load_mask(volume=[2, 3, 4]).sum() == 24
    enc = create_encoder("cnn3d", 24, 3, 8, volume=[2, 3, 4])
    assert enc(torch.randn(2, 24)).shape == (2, 3, 8)


def test_one_line_errors(mask_file: tuple[Path, int], monkeypatch: pytest.MonkeyPatch) -> None:
    path, n_vox = mask_file
    with pytest.raises(ValueError, match=f"keeps {n_vox} voxels but the modality has 10"):
        create_encoder("cnn3d", 10, 8, 16, mask=str(path))
    with pytest.raises(ValueError, match="exactly one of the options"):
        create_encoder("cnn3d", 10, 8, 16)
    with pytest.raises(FileNotFoundError, match="no file"):
        create_encoder("cnn3d", 10, 8, 16, mask="missing.nii.gz")
    nifti = path.with_name("t.nii.gz")
    nifti.write_bytes(b"")
    monkeypatch.setitem(sys.modules, "nibabel", None)  # as if nibabel were not installed
    with pytest.raises(OptionalDependencyError, match=r"moe-retriever\[imaging\]") as info:
        create_encoder("cnn3d", 10, 8, 16, mask=str(nifti))
    assert isinstance(info.value, ValueError) and "\n" not in str(info.value)
    np.testing.assert_array_equal(load_mask(str(path)), np.load(path))  # .npy needs no nibabel


def test_token_grid() -> None:
    for p in (1, 2, 7, 8, 12, 16):
        g = token_grid(p)
        assert int(np.prod(g)) == p
    assert token_grid(16) == (4, 2, 2) and token_grid(8) == (2, 2, 2)


def test_usable_by_config_in_every_completion(mask_file: tuple[Path, int]) -> None:
    """model.encoders: {image: {name: cnn3d, mask: ...}} builds the encoder for the image
    modality and a forward pass with a missing image runs for several completions."""
    path, n_vox = mask_file
    dims = {"image": n_vox, "tab": 5}
    cfg = ModelConfig(
        n_tokens=4,
        dim=16,
        encoders={"image": {"name": "cnn3d", "mask": str(path), "channels": 4, "blocks": 2}},
    )
    x = {"image": torch.randn(6, n_vox), "tab": torch.randn(6, 5)}
    observed = torch.ones(6, 2, dtype=torch.bool)
    observed[:2, 0] = False
    for method in ("zero", "moe-retriever", "mean"):
        model = MultimodalClassifier(dims, 2, cfg, completion=method, seed=0)
        assert isinstance(model.encoders[model._keys["image"]], Volume3DEncoder)
        model.set_training_pool(x, observed)
        out = model(x, observed, sample_keys=torch.arange(6))
        assert out.logits.shape == (6, 2) and torch.isfinite(out.logits).all()
