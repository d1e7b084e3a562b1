"""NRMSE (Eq. 13) and the PSNR mapping (Eq. 14) against brute force (issue 2)."""

from __future__ import annotations

import math

import pytest
import torch

import latentmotion as lm


def _nrmse_loops(p, a, m):
    s = n = 0.0
    flat_p, flat_a, flat_m = p.reshape(-1).tolist(), a.reshape(-1).tolist(), m.reshape(-1).tolist()
    for pi, ai, mi in zip(flat_p, flat_a, flat_m):
        if mi:
            s += (pi - ai) ** 2
            n += 1
    return math.sqrt(s / n) / (max(flat_a) - min(flat_a))


def test_nrmse_against_loops():
    gen = torch.Generator().manual_seed(0)
    p = torch.randn(3, 2, 4, 5, generator=gen, dtype=torch.float64)
    a = torch.randn(3, 2, 4, 5, generator=gen, dtype=torch.float64)
    m = torch.rand(3, 1, 4, 5, generator=gen) > 0.4
    got = lm.nrmse(p, a, m)
    for i in range(3):
        ref = _nrmse_loops(p[i], a[i], m[i].expand(2, 4, 5))
        assert got[i].item() == pytest.approx(ref, rel=1e-10)
    assert lm.nrmse(p, a)[0].item() == pytest.approx(_nrmse_loops(p[0], a[0], torch.ones(2, 4, 5)), rel=1e-10)
    assert lm.nrmse(p.float(), a.float(), m)[1].item() == pytest.approx(got[1].item(), rel=1e-5)  # float32 path


def test_range_uses_whole_actual_tensor_not_the_mask():
    a = torch.tensor([[0.0, 1.0, 10.0]])
    p = torch.tensor([[1.0, 1.0, 0.0]])
    m = torch.tensor([[True, True, False]])
    assert lm.nrmse(p, a, m).item() == pytest.approx(math.sqrt(0.5) / 10)


def test_zero_at_identity_and_shape_check():
    a = torch.rand(2, 3, 4, 4)
    assert torch.all(lm.nrmse(a, a) == 0)
    with pytest.raises(lm.InputError):
        lm.nrmse(a, a[:, :2])


def test_eq14_endpoints_and_inverse():
    assert lm.nrmse_from_psnr(27.0) == pytest.approx(0.0445, abs=5e-4)
    assert lm.nrmse_from_psnr(41.0) == pytest.approx(0.0089, abs=5e-4)
    lo, hi = lm.hevc_band()
    assert round(lo, 3) == 0.009 and round(hi, 3) == 0.044
    for db in (20.0, 27.0, 33.3, 41.0):
        assert lm.psnr_from_nrmse(lm.nrmse_from_psnr(db)) == pytest.approx(db)
    # closed form: 255 / 256 / 10^(PSNR/20)
    assert lm.nrmse_from_psnr(30.0) == pytest.approx(255 / 256 / 10 ** 1.5)


def test_feature_psnr_is_minus_20_log_nrmse():
    a = torch.rand(1, 8)
    p = a + 0.01
    assert lm.psnr(p, a).item() == pytest.approx(-20 * math.log10(lm.nrmse(p, a).item()))


def test_kl_divergence_matches_the_definition_and_its_properties():
    from latentmotion.metrics import kl_divergence

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 7, generator=g) * 3, torch.randn(5, 7, generator=g) * 3
    p, q = a.double().softmax(1), b.double().softmax(1)
    brute = torch.tensor([sum(float(p[i, k]) * math.log(float(p[i, k]) / float(q[i, k])) for k in range(7)) for i in range(5)], dtype=torch.float64)
    kl = kl_divergence(a, b)
    assert torch.allclose(kl, brute, atol=1e-12) and bool((kl > 0).all())
    assert torch.equal(kl_divergence(a, a), torch.zeros(5, dtype=torch.float64))
    assert torch.allclose(kl_divergence(a + 5, b - 2), kl, atol=1e-12)  # softmax ignores a constant shift of the logits
    assert not torch.allclose(kl_divergence(b, a), kl)  # not symmetric: the uncompressed output is the reference
    with pytest.raises(lm.InputError):
        kl_divergence(a, b[:, :6])
