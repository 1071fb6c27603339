"""Map-similarity metrics: hand-made maps, scipy / scikit-image as independent references."""

import numpy as np
import pytest
import torch
from scipy import ndimage, stats
from skimage.metrics import structural_similarity
from torch import nn

from robattr_cli.metrics import (
    aopc,
    average_ranks,
    cosine,
    gaussian_window,
    insertion_curve,
    kendall_tau,
    mse,
    pcc,
    similarity_report,
    spearman,
    ssim,
    topk_intersection,
)


@pytest.fixture
def maps():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(4, 12, 12, generator=g, dtype=torch.float64)
    b = 0.6 * a + 0.4 * torch.rand(4, 12, 12, generator=g, dtype=torch.float64)
    return a, b


def test_pcc_cosine_mse_by_hand():
    a = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    torch.testing.assert_close(pcc(a, 2 * a + 1), torch.tensor([1.0]))
    torch.testing.assert_close(pcc(a, -a), torch.tensor([-1.0]))
    b = torch.tensor([[0.0, 0.0, 1.0, 1.0]])  # centred: (-1.5,-.5,.5,1.5) . (-.5,-.5,.5,.5)
    torch.testing.assert_close(pcc(a, b), torch.tensor([2.0 / (5**0.5 * 1.0)]))
    torch.testing.assert_close(cosine(a, b), torch.tensor([7.0 / (30**0.5 * 2**0.5)]))
    torch.testing.assert_close(mse(a, b), torch.tensor([1.0 + 4 + 4 + 9]))
    assert pcc(torch.ones(1, 4), a).item() == 0.0  # constant map: defined as 0


def test_pcc_matches_scipy(maps):
    a, b = maps
    ours = pcc(a, b)
    for i in range(a.shape[0]):
        ref = stats.pearsonr(a[i].flatten().numpy(), b[i].flatten().numpy()).statistic
        assert ours[i].item() == pytest.approx(ref, abs=1e-12)


def test_topk_intersection_by_hand():
    a = torch.tensor([[9.0, 8.0, 7.0, 1.0, 0.0, 2.0]])
    b = torch.tensor([[9.0, 0.0, 7.0, 8.0, 1.0, 2.0]])
    # top-3 of a = {0,1,2}; of b = {0,3,2}: two shared
    torch.testing.assert_close(topk_intersection(a, b, 3), torch.tensor([2 / 3]))
    torch.testing.assert_close(topk_intersection(a, a, 6), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="k=7"):
        topk_intersection(a, b, 7)


def test_rank_metrics_match_scipy_with_ties(maps):
    a, b = maps
    a = (a * 5).round()  # many ties
    b = (b * 7).round()
    rho, tau = spearman(a, b), kendall_tau(a, b)
    for i in range(a.shape[0]):
        x, y = a[i].flatten().numpy(), b[i].flatten().numpy()
        assert rho[i].item() == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-10)
        assert tau[i].item() == pytest.approx(stats.kendalltau(x, y).statistic, abs=1e-10)
    np.testing.assert_allclose(
        average_ranks(a.flatten(1)).numpy(), stats.rankdata(a.flatten(1).numpy(), axis=1)
    )


def test_kendall_matches_scipy_and_a_pairwise_formulation():
    g = torch.Generator().manual_seed(3)
    a = torch.randint(0, 40, (3, 1000), generator=g).double()  # n not a power of 2, ties
    b = a + torch.randint(-30, 30, (3, 1000), generator=g).double()
    b[1] = torch.rand(1000, generator=g, dtype=torch.float64)  # no ties in b
    tau = kendall_tau(a, b)
    for i in range(3):
        ref = stats.kendalltau(a[i].numpy(), b[i].numpy()).statistic
        assert tau[i].item() == pytest.approx(ref, abs=1e-12)
    # independent O(n^2) tau-b on a small case
    x, y = a[:, :50], b[:, :50]
    sx = torch.sign(x[:, :, None] - x[:, None, :])
    sy = torch.sign(y[:, :, None] - y[:, None, :])
    s = (sx * sy).sum((1, 2)) / 2
    n0 = 50 * 49 / 2
    t1, t2 = ((sx == 0).sum((1, 2)) - 50) / 2, ((sy == 0).sum((1, 2)) - 50) / 2
    torch.testing.assert_close(kendall_tau(x, y), s / ((n0 - t1) * (n0 - t2)).sqrt())
    torch.testing.assert_close(kendall_tau(a, a), torch.ones(3, dtype=a.dtype))
    torch.testing.assert_close(kendall_tau(a, -a), -torch.ones(3, dtype=a.dtype))
    assert kendall_tau(torch.ones(1, 8), a[:1, :8].float()).item() == 0.0


def test_ssim_identical_is_one_and_matches_skimage(maps):
    a, b = maps
    torch.testing.assert_close(ssim(a, a), torch.ones(4, dtype=a.dtype))
    # scikit-image truncates its Gaussian at 3.5 sigma: an 11x11 window for sigma 1.5.
    ours = ssim(a, b, win_size=11, padding="valid")
    for i in range(a.shape[0]):
        x, y = a[i].numpy(), b[i].numpy()
        ref = structural_similarity(
            x,
            y,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            win_size=11,
            data_range=float(x.max() - x.min()),
        )
        assert ours[i].item() == pytest.approx(ref, abs=1e-10)


def test_ssim_same_padding_matches_a_numpy_formulation(maps):
    a, b = maps
    w = gaussian_window(7, 1.5, torch.float64).numpy()
    ours = ssim(a, b)
    for i in range(a.shape[0]):
        x, y = a[i].numpy(), b[i].numpy()
        f = lambda z: ndimage.correlate(z, w, mode="constant")  # noqa: E731
        mx, my = f(x), f(y)
        vx, vy, cxy = f(x * x) - mx**2, f(y * y) - my**2, f(x * y) - mx * my
        rng = x.max() - x.min()
        c1, c2 = (0.01 * rng) ** 2, (0.03 * rng) ** 2
        ref = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
        assert ours[i].item() == pytest.approx(ref.mean(), abs=1e-12)


def test_ssim_window_is_normalised_gaussian():
    w = gaussian_window(7, 1.5, torch.float64)
    assert w.sum().item() == pytest.approx(1.0)
    assert w[3, 3] == w.max() and torch.equal(w, w.T)


def test_similarity_report_keys_and_identity(maps):
    a, _ = maps
    rep = similarity_report(a, a, k=10)
    assert set(rep) == {
        "mse",
        "pcc",
        "ssim",
        "cosine",
        "ssim_sumnorm",
        "topk",
        "spearman",
        "kendall",
    }
    for key, value in rep.items():
        expected = 0.0 if key == "mse" else 1.0
        torch.testing.assert_close(value, torch.full((4,), expected, dtype=a.dtype))


def test_insertion_curve_keeps_pixels_above_rank():
    class SumModel(nn.Module):  # class-0 logit = sum of kept pixels, class 1 = 0
        def forward(self, x):
            s = x.flatten(1).sum(1)
            return torch.stack([s, torch.zeros_like(s)], 1)

    x = torch.ones(1, 1, 2, 2)
    h = torch.tensor([[[4.0, 3.0], [2.0, 1.0]]])
    curve = insertion_curve(SumModel(), x, torch.tensor([0]), h, n_ratios=4)
    # ratio i/4 keeps pixels strictly above the value ranked i -> 0, 1, 2, 3 pixels kept
    kept = torch.tensor([0.0, 1.0, 2.0, 3.0])
    expected = torch.sigmoid(kept)
    torch.testing.assert_close(curve, expected[None])
    torch.testing.assert_close(aopc(curve), expected.mean()[None])


def test_default_topk_follows_the_brief():
    from robattr_cli.metrics import default_topk

    sizes = {28: 77, 32: 100, 224: 1000}
    assert {s: default_topk(torch.zeros(1, s, s)) for s in sizes} == sizes
