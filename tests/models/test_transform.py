"""latentmotion.models.transform: the channel KLT against closed forms and its shipped files."""

from __future__ import annotations

import pytest
import torch

from latentmotion.errors import InputError
from latentmotion.models.transform import ChannelTransform, fisher_information, load_transform, transform_path

SHIPPED = [("efficientnet_lite0", "_blocks.4.add", 40), ("efficientnet_lite0", "_blocks.10.add", 112), ("mobilenet_v2", "features.6.add", 32), ("mobilenet_v2", "features.13.add", 96)]


def _correlated(n: int = 64) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    s = torch.randn(n, 3, 6, 6, generator=g) * torch.tensor([5.0, 2.0, 0.5])[None, :, None, None]
    mix = torch.linalg.qr(torch.randn(4, 4, generator=g))[0][:, :3]  # 3 sources seen through 4 channels
    return torch.einsum("cs,nshw->nchw", mix, s) + torch.tensor([1.0, -2.0, 0.0, 3.0])[None, :, None, None]


def test_klt_is_orthonormal_ordered_and_inverts_exactly():
    x = _correlated()
    t = ChannelTransform.fit(x)
    assert torch.allclose(t.basis.T @ t.basis, torch.eye(4), atol=1e-5)
    assert torch.all(t.variance[:-1] >= t.variance[1:])
    z = t.encode(x)
    var = z.transpose(0, 1).reshape(4, -1).var(1, correction=0)
    assert torch.allclose(var, t.variance, rtol=1e-3, atol=1e-4)  # coordinates carry the fitted variances, decorrelated
    assert torch.allclose(torch.cov(z.transpose(0, 1).reshape(4, -1)), torch.diag(torch.cov(z.transpose(0, 1).reshape(4, -1)).diagonal()), atol=1e-2)
    assert float(t.variance[-1]) < 1e-6  # 3 sources: the fourth direction is empty
    assert torch.allclose(t.decode(z), x, atol=1e-4)
    assert torch.all(t.basis[t.basis.abs().argmax(0), torch.arange(4)] > 0)  # sign convention: largest entry positive


def test_klt_of_two_channels_matches_the_closed_form():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(200, 1, 4, 4, generator=g)
    x = torch.cat([a, a + 0.01 * torch.randn(200, 1, 4, 4, generator=g)], 1)  # two nearly equal channels
    t = ChannelTransform.fit(x)
    assert torch.allclose(t.basis[:, 0], torch.tensor([1.0, 1.0]) / 2**0.5, atol=1e-3)  # their sum direction first


def test_coding_coordinates_keeps_motion_and_squared_error():
    t = ChannelTransform.fit(_correlated())
    f = _correlated(2)
    shifted = torch.roll(f, shifts=(1, 2), dims=(2, 3))
    assert torch.allclose(t.encode(shifted), torch.roll(t.encode(f), shifts=(1, 2), dims=(2, 3)), atol=1e-5)  # Eq. 12 holds for z
    e = 0.1 * torch.randn_like(f)
    z = t.encode(f)
    assert torch.allclose((t.decode(z + e) - f).pow(2).sum(), e.pow(2).sum(), rtol=1e-4)  # orthonormal: the same squared error


def test_weighted_transform_measures_errors_by_its_metric_and_inverts():
    """With a metric M the coordinates' squared error is d^T M d of the features' error d (summed over positions)."""
    g = torch.Generator().manual_seed(3)
    b = torch.randn(4, 4, generator=g)
    m = b @ b.T + 0.1 * torch.eye(4)
    x = _correlated()
    t = ChannelTransform.fit(x, m)
    assert torch.allclose(t.decode(t.encode(x)), x, atol=1e-4)
    d = 0.01 * torch.randn(2, 4, 6, 6, generator=g)
    f = x[:2]
    err = (t.encode(f + d) - t.encode(f)).pow(2).sum()
    assert torch.allclose(err, torch.einsum("nchw,cd,ndhw->", d, m, d), rtol=1e-3)
    z = t.encode(x).transpose(0, 1).reshape(4, -1)
    assert torch.all(t.variance[:-1] >= t.variance[1:]) and torch.allclose(z.var(1, correction=0), t.variance, rtol=1e-3, atol=1e-4)
    plain = ChannelTransform.fit(x, torch.eye(4))  # the identity metric is the plain KLT
    assert torch.allclose(plain.synthesis, ChannelTransform.fit(x).basis, atol=1e-5)
    assert "synthesis" not in ChannelTransform.fit(x).state_dict()  # a plain KLT's state (and fingerprint) as it always was


def test_matrix_power_against_the_eigendecomposition():
    from latentmotion.models.transform import matrix_power

    u = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64))[0]
    m = u @ torch.diag(torch.tensor([4.0, 1.0, 0.0], dtype=torch.float64)) @ u.T
    assert torch.allclose(matrix_power(m, 0.5) @ matrix_power(m, 0.5), m, atol=1e-9)
    floored = torch.linalg.eigvalsh(matrix_power(m, 1.0, floor=0.01))
    assert torch.allclose(floored, torch.tensor([0.04, 1.0, 4.0], dtype=torch.float64), atol=1e-9)  # the empty direction at 1 % of the largest


class _Pool(torch.nn.Module):
    """A cloud that reads channels 0 and 1 only (mean-pooled, then a fixed 3-class head)."""

    def forward(self, f):
        return f[:, :2].mean((2, 3)) @ torch.tensor([[1.0, -1.0, 0.5], [0.0, 2.0, -1.0]])


def test_fisher_information_is_symmetric_psd_and_blind_where_the_cloud_is():
    from types import SimpleNamespace

    split = SimpleNamespace(edge=lambda frames: frames, cloud=_Pool())
    frames = torch.randn(5, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    f, m = fisher_information(split, frames, torch.Generator().manual_seed(1), samples=64)
    assert torch.equal(f, frames) and torch.allclose(m, m.T)
    assert float(torch.linalg.eigvalsh(m).min()) > -1e-12
    assert float(m[2].abs().max()) == 0 and float(m[:2, :2].diagonal().min()) > 0  # channel 2 never reaches the output
    # closed form of the exact Fisher per image: J^T (diag q - q q^T) J over the 16 positions, J = W^T / 16
    w = torch.tensor([[1.0, -1.0, 0.5], [0.0, 2.0, -1.0]], dtype=torch.float64)
    q = torch.softmax(_Pool()(frames).double(), 1)
    exact = sum(16 * (w / 16) @ (torch.diag(qi) - torch.outer(qi, qi)) @ (w / 16).T for qi in q)
    assert torch.allclose(m[:2, :2], exact, rtol=0.35)  # 64 sampled classes per image estimate it


@pytest.mark.parametrize("model,layer,channels", SHIPPED)
def test_shipped_weighted_transforms_invert_and_differ_from_the_klt(model, layer, channels):
    t, plain = load_transform(model, layer, weighted=True), load_transform(model, layer)
    assert t.basis.shape == t.synthesis.shape == (channels, channels)
    assert torch.allclose(t.synthesis.double() @ t.basis.double().T, torch.eye(channels, dtype=torch.float64), atol=1e-3)  # decode(encode(f)) = f
    assert not torch.allclose(t.basis, plain.basis, atol=1e-2)


@pytest.mark.parametrize("model,layer,channels", SHIPPED)
def test_shipped_transforms_load_and_fit_their_cut(model, layer, channels):
    t = load_transform(model, layer)
    assert t.basis.shape == (channels, channels) and torch.allclose(t.basis.T @ t.basis, torch.eye(channels), atol=1e-4)
    assert torch.all(t.variance[:-1] >= t.variance[1:]) and float(t.variance[0]) > 0
    from latentmotion.models import load_model, weights_fingerprint

    fitted_on = weights_fingerprint(load_model(model))
    assert load_transform(model, layer, weights=fitted_on, channels=channels).basis.shape[0] == channels  # the weights it was fitted on


def test_a_transform_of_other_weights_or_channels_is_refused():
    with pytest.raises(InputError, match="fitted on weights"):
        load_transform("efficientnet_lite0", "_blocks.4.add", weights="0123456789abcdef")
    with pytest.raises(InputError, match="transforms 40 channels"):
        load_transform("efficientnet_lite0", "_blocks.4.add", channels=112)
    other = transform_path("efficientnet_lite0", "_blocks.4.add")  # given for another cut: refused by its record, whatever its channels
    with pytest.raises(InputError, match="fitted for efficientnet_lite0 _blocks.4.add, not mobilenet_v2 features.6.add"):
        load_transform("mobilenet_v2", "features.6.add", other)
    task = transform_path("efficientnet_lite0", "_blocks.4.add", weighted=True)  # kltw's file where klt's is asked for: refused
    with pytest.raises(InputError, match="weighted by the task"):
        load_transform("efficientnet_lite0", "_blocks.4.add", task)
    with pytest.raises(InputError, match="a plain KLT"):
        load_transform("efficientnet_lite0", "_blocks.4.add", other, weighted=True)


def test_missing_or_damaged_transform_is_one_clear_error(tmp_path):
    with pytest.raises(InputError, match="codec fit-transform"):
        load_transform("efficientnet_lite0", "_blocks.0._bn2")
    bad = tmp_path / "t.pt"
    bad.write_bytes(b"not a transform")
    with pytest.raises(InputError, match="not a channel transform"):
        load_transform("efficientnet_lite0", "_blocks.4.add", bad)
    with pytest.raises(InputError, match="does not exist or is not a regular file"):  # a given path: no advice to fit one
        load_transform("efficientnet_lite0", "_blocks.4.add", tmp_path)
    blob = torch.load(transform_path("efficientnet_lite0", "_blocks.4.add"), weights_only=True)
    torch.save({"state": blob["state"], "record": {"weights": blob["record"]["weights"]}}, bad)  # a sound basis, no record of its cut
    with pytest.raises(InputError, match="not a channel transform"):
        load_transform("efficientnet_lite0", "_blocks.4.add", bad)


@pytest.mark.slow
def test_refitting_reproduces_the_shipped_file():
    """One command and a seed give the shipped transform (needs `make data`)."""
    from latentmotion.models.transform import FitSettings, fit_channel_transform

    pytest.importorskip("skvideo")
    t, _ = fit_channel_transform(FitSettings("efficientnet_lite0", "_blocks.4.add", seed=0))
    shipped = load_transform("efficientnet_lite0", "_blocks.4.add")
    assert transform_path("efficientnet_lite0", "_blocks.4.add").is_file()
    assert torch.allclose(t.basis, shipped.basis, atol=1e-4) and torch.allclose(t.mean, shipped.mean, atol=1e-5)


@pytest.mark.slow
def test_refitting_reproduces_the_shipped_weighted_file():
    """The task-weighted transform too: one command and a seed (the classes drawn from the cloud's softmax are seeded)."""
    from latentmotion.defaults import TASK_WEIGHT
    from latentmotion.models.transform import FitSettings, fit_channel_transform

    pytest.importorskip("skvideo")
    t, record = fit_channel_transform(FitSettings("efficientnet_lite0", "_blocks.4.add", seed=0, task_weight=TASK_WEIGHT))
    shipped = load_transform("efficientnet_lite0", "_blocks.4.add", weighted=True)
    assert record["settings"]["task_weight"] == TASK_WEIGHT
    assert torch.allclose(t.synthesis, shipped.synthesis, atol=1e-3) and torch.allclose(t.basis, shipped.basis, atol=1e-3)
