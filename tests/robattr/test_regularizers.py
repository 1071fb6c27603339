"""Regularisers against closed forms: a per-class quadratic f_k(x) = x^T A_k x + b_k^T x has
input gradient (A_k + A_k^T) x + b_k and input Hessian A_k + A_k^T, so every term of the
paper's objective and of the Hessian baseline can be written without autograd."""

import pytest
import torch
from torch import nn

from robattr_cli.regularizers import (
    REGULARIZERS,
    CleanPass,
    RegSpec,
    gradient_alignment_terms,
    hessian_term,
    logit_input_gradient,
    sample_delta,
)

B, C, H, W, K = 3, 1, 2, 2, 3
D = C * H * W


class Quadratic(nn.Module):
    """f_k(x) = x^T A_k x + b_k^T x on flattened inputs; float64."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.A = nn.Parameter(torch.randn(K, D, D, generator=g, dtype=torch.float64))
        self.b = nn.Parameter(torch.randn(K, D, generator=g, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x.flatten(1)
        return torch.einsum("bi,kij,bj->bk", z, self.A, z) + z @ self.b.T


def closed_grad(A, b, x, y):
    """(A_y + A_y^T) x + b_y per example, (B, D)."""
    z = x.flatten(1)
    S = A[y] + A[y].transpose(1, 2)
    return torch.einsum("bij,bj->bi", S, z) + b[y]


def closed_alignment(A_clean, b_clean, A, b, x, y, delta):
    g = closed_grad(A_clean, b_clean, x, y)
    g_r = closed_grad(A, b, x + delta, y)
    l2 = ((g - g_r) ** 2).sum(1).mean()
    cos = ((g * g_r).sum(1) / (g.norm(dim=1) * g_r.norm(dim=1))).mean()
    return l2, (1 - cos) / 2


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(B, C, H, W, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 2, 1])
    delta = 0.3 * torch.randn(B, C, H, W, generator=g, dtype=torch.float64)
    return x, y, delta


def test_logit_input_gradient_is_true_class_gradient(data):
    x, y, _ = data
    model = Quadratic()
    got = logit_input_gradient(model, x, y).flatten(1)
    torch.testing.assert_close(got, closed_grad(model.A, model.b, x, y).detach())


def test_alignment_terms_equal_hand_computed_values(data):
    x, y, delta = data
    model = Quadratic()
    terms = gradient_alignment_terms(model, x, y, delta)
    # g(x + d) - g(x) = (A_y + A_y^T) d exactly for a quadratic.
    S = model.A[y] + model.A[y].transpose(1, 2)
    l2_hand = (torch.einsum("bij,bj->bi", S, delta.flatten(1)) ** 2).sum(1).mean()
    _, cosd_hand = closed_alignment(model.A, model.b, model.A, model.b, x, y, delta)
    torch.testing.assert_close(terms["l2"], l2_hand)
    torch.testing.assert_close(terms["cosd"], cosd_hand)


def _finite_difference(fn, params, h=1e-6):
    grads = []
    for p in params:
        g = torch.zeros_like(p)
        flat = p.data.view(-1)
        for i in range(flat.numel()):
            old = flat[i].item()
            flat[i] = old + h
            up = fn().item()
            flat[i] = old - h
            down = fn().item()
            flat[i] = old
            g.view(-1)[i] = (up - down) / (2 * h)
        grads.append(g)
    return grads


@pytest.mark.parametrize("detach", [True, False])
def test_parameter_gradient_matches_finite_differences(data, detach):
    x, y, delta = data
    model = Quadratic()
    lam_l2, lam_cos = 0.7, 1.3
    terms = gradient_alignment_terms(model, x, y, delta, detach_clean_grad=detach)
    penalty = lam_l2 * terms["l2"] + lam_cos * terms["cosd"]
    auto = torch.autograd.grad(penalty, [model.A, model.b])

    A0, b0 = model.A.detach().clone(), model.b.detach().clone()

    def closed():
        # With the stop-gradient, g(x) is a constant computed from the current weights.
        Ac, bc = (A0, b0) if detach else (model.A, model.b)
        l2, cosd = closed_alignment(Ac, bc, model.A, model.b, x, y, delta)
        return lam_l2 * l2 + lam_cos * cosd

    with torch.no_grad():
        fd = _finite_difference(closed, [model.A, model.b])
    for a, f in zip(auto, fd, strict=True):
        torch.testing.assert_close(a, f, rtol=1e-5, atol=1e-6)
    if not detach:
        return
    # Detaching must change the gradient (the clean branch contributes otherwise).
    full = gradient_alignment_terms(model, x, y, delta, detach_clean_grad=False)
    full_grad = torch.autograd.grad(lam_l2 * full["l2"] + lam_cos * full["cosd"], model.A)[0]
    assert not torch.allclose(full_grad, auto[0])


def test_hessian_term_equals_exact_hv_norm(data):
    x, y, _ = data
    model = Quadratic()
    v = torch.randn(B, C, H, W, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    got = hessian_term(model, x, y, v)

    def closed():
        Hs = model.A[y] + model.A[y].transpose(1, 2)  # (B, D, D), constant in x
        return (torch.einsum("bij,bj->bi", Hs, v.flatten(1)) ** 2).sum(1).mean()

    torch.testing.assert_close(got, closed())
    auto = torch.autograd.grad(got, model.A)[0]
    with torch.no_grad():
        (fd,) = _finite_difference(closed, [model.A])
    torch.testing.assert_close(auto, fd, rtol=1e-5, atol=1e-6)


def _softplus_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1),
        nn.Softplus(beta=3.0),
        nn.Flatten(),
        nn.Linear(4 * 5 * 5, 8),
        nn.Softplus(beta=3.0),
        nn.Linear(8, 3),
    ).double()


@pytest.mark.parametrize("c", [0.1, 3.0])
def test_scaling_last_layer_scales_l2_by_c_squared_and_keeps_cosine(c):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(4, 2, 5, 5, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 1])
    delta = 0.05 * torch.randn(x.shape, generator=g, dtype=torch.float64)
    net = _softplus_net()
    before = gradient_alignment_terms(net, x, y, delta)
    with torch.no_grad():
        net[-1].weight.mul_(c)
        net[-1].bias.mul_(c)
    after = gradient_alignment_terms(net, x, y, delta)
    torch.testing.assert_close(after["l2"], c**2 * before["l2"])
    torch.testing.assert_close(after["cosd"], before["cosd"])
    assert before["cosd"] > 1e-6  # a non-trivial check: the maps do move under delta


def test_reusing_the_clean_pass_gives_the_same_terms(data):
    x, y, delta = data
    model = Quadratic()
    fresh = gradient_alignment_terms(model, x, y, delta, detach_clean_grad=False)
    x_leaf = x.clone().requires_grad_(True)
    reused = gradient_alignment_terms(
        model, x, y, delta, detach_clean_grad=False, clean=CleanPass(x_leaf, model(x_leaf))
    )
    for key in fresh:
        torch.testing.assert_close(fresh[key], reused[key])
    v = torch.ones_like(x)
    x_leaf = x.clone().requires_grad_(True)
    torch.testing.assert_close(
        hessian_term(model, x, y, v), hessian_term(model, x, y, v, CleanPass(x_leaf, model(x_leaf)))
    )


def test_delta_is_eps_over_255_in_pixels_divided_by_std():
    x = torch.zeros(64, 3, 8, 8)
    std = (0.2023, 0.1994, 0.2010)
    d = sample_delta(x, 8.0, std, "uniform", torch.Generator().manual_seed(0))
    for ch, s in enumerate(std):
        bound = 8 / 255 / s
        assert d[:, ch].abs().max() <= bound + 1e-7
        assert d[:, ch].abs().max() > 0.99 * bound  # fills the box
        # back in pixel units, every channel has the same l_inf radius eps/255
        assert (d[:, ch] * s).abs().max() <= 8 / 255 + 1e-7
    gauss = sample_delta(x, 8.0, std, "gaussian", torch.Generator().manual_seed(0))
    assert abs((gauss[:, 0] * std[0]).std().item() - 8 / 255) < 2e-3
    again = sample_delta(x, 8.0, std, "uniform", torch.Generator().manual_seed(0))
    assert torch.equal(d, again)
    with pytest.raises(ValueError, match="perturb"):
        sample_delta(x, 8.0, std, "grad", torch.Generator())


def test_registry_weights_the_terms(data):
    x, y, _ = data
    model = Quadratic()
    spec = RegSpec(eps=30.0, std=(0.5,), lambda_l2=0.25, lambda_cos=2.0, lambda_hessian=0.1)
    seed = 7
    delta = sample_delta(x, spec.eps, spec.std, spec.perturb, torch.Generator().manual_seed(seed))
    terms = gradient_alignment_terms(model, x, y, delta)
    expect = {
        "l2cos": 0.25 * terms["l2"] + 2.0 * terms["cosd"],
        "l2": 0.25 * terms["l2"],
        "cos": 2.0 * terms["cosd"],
    }
    for name, value in expect.items():
        out = REGULARIZERS[name](model, x, y, spec, torch.Generator().manual_seed(seed))
        torch.testing.assert_close(out.penalty, value)
    v = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed), dtype=x.dtype)
    hess = REGULARIZERS["hessian"](model, x, y, spec, torch.Generator().manual_seed(seed))
    torch.testing.assert_close(hess.penalty, 0.1 * hessian_term(model, x, y, v))
    none = REGULARIZERS["none"](model, x, y, spec, torch.Generator())
    assert none.penalty.item() == 0 and none.terms == {}
