"""Attributions against Captum (same model, same input) and closed-form invariants."""

import pytest
import torch
from captum.attr import InputXGradient, IntegratedGradients, NoiseTunnel, Saliency
from torch import nn

from labshared.errors import ConfigError
from robattr_cli.attributions import (
    ATTRIBUTIONS,
    attribute,
    heatmap,
    integration_nodes,
    postprocess,
)


def tiny_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1),
        nn.Softplus(beta=3.0),
        nn.Conv2d(4, 4, 3, stride=2, padding=1),
        nn.Softplus(beta=3.0),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 5),
    ).eval()


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 2, 8, 8, generator=g)
    y = torch.tensor([0, 3, 4])
    return tiny_cnn(), x, y


def test_grad_and_input_x_grad_match_captum(batch):
    model, x, y = batch
    ours = attribute(model, x, y, "grad")
    theirs = Saliency(model).attribute(x.clone().requires_grad_(), target=y, abs=False)
    torch.testing.assert_close(ours, theirs)
    ours = attribute(model, x, y, "input-x-grad")
    theirs = InputXGradient(model).attribute(x.clone().requires_grad_(), target=y)
    torch.testing.assert_close(ours, theirs)


@pytest.mark.parametrize("rule", ["gausslegendre", "riemann_middle"])
def test_integrated_gradients_match_captum(batch, rule):
    model, x, y = batch
    base = torch.full_like(x, -0.3)
    ours = attribute(
        model,
        x,
        y,
        "integrated-gradients",
        baseline=base,
        n_steps=16,
        integration=rule,
        internal_batch_size=7,  # chunks that split the steps unevenly
    )
    theirs = IntegratedGradients(model).attribute(
        x, baselines=base, target=y, n_steps=16, method=rule
    )
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-6)


def test_integrated_gradients_completeness(batch):
    model, x, y = batch
    ig = attribute(model, x, y, "integrated-gradients", n_steps=200)
    with torch.no_grad():
        gap = model(x).gather(1, y[:, None]) - model(torch.zeros_like(x)).gather(1, y[:, None])
    torch.testing.assert_close(ig.flatten(1).sum(1), gap.squeeze(1), rtol=2e-3, atol=2e-4)


def test_trapezoid_exact_on_quadratic_model():
    # f(x) = x^T A x summed over outputs of one class: grad linear in alpha, so the
    # trapezoid rule with 2 points is exact and IG sums to f(x) - f(0) exactly.
    torch.manual_seed(0)
    a = torch.randn(4, 4)

    class Quadratic(nn.Module):
        def forward(self, x):
            flat = x.flatten(1)
            return torch.stack([(flat @ a * flat).sum(1), flat.sum(1)], 1)

    x = torch.randn(2, 1, 2, 2, dtype=torch.float64)
    a = a.double()
    ig = attribute(Quadratic(), x, 0, "integrated-gradients", n_steps=2)
    flat = x.flatten(1)
    expected = flat * ((a + a.T) @ flat.T).T / 2  # x_i * mean over the path of (A+A^T)x
    torch.testing.assert_close(ig.flatten(1), expected)


def test_path_averaged_grad_is_the_official_sum(batch):
    model, x, y = batch
    ours = attribute(model, x, y, "path-averaged-grad", n_steps=4)
    expected = sum(attribute(model, k / 4 * x, y, "grad") for k in range(5)) / 4
    torch.testing.assert_close(ours, expected)


def test_smoothgrad_matches_noise_tunnel_with_same_seed(batch):
    model, x, y = batch
    for b in range(x.shape[0]):  # Captum takes one stdev per call; ours is per image
        xb, yb = x[b : b + 1], y[b : b + 1]
        ours = attribute(
            model,
            xb,
            yb,
            "smoothgrad",
            n_samples=6,
            noise_level=0.15,
            generator=torch.Generator().manual_seed(5),
        )
        sigma = 0.15 * float(xb.max() - xb.min())
        torch.manual_seed(5)
        theirs = NoiseTunnel(Saliency(model)).attribute(
            xb, nt_type="smoothgrad", nt_samples=6, stdevs=sigma, target=yb, abs=False
        )
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-6)


def test_smoothgrad_uses_its_generator(batch):
    model, x, y = batch
    run = lambda s: attribute(  # noqa: E731
        model, x, y, "smoothgrad", n_samples=3, generator=torch.Generator().manual_seed(s)
    )
    torch.testing.assert_close(run(2), run(2))
    assert not torch.allclose(run(2), run(3))


@pytest.mark.parametrize("method", sorted(ATTRIBUTIONS))
def test_create_graph_makes_maps_differentiable(batch, method):
    model, x, y = batch

    def options():
        if method == "smoothgrad":
            return {"n_samples": 3, "generator": torch.Generator().manual_seed(0)}
        return {"n_steps": 4} if method in ("integrated-gradients", "path-averaged-grad") else {}

    x_leaf = x.clone().requires_grad_(True)
    h = heatmap(model, x_leaf, y, method, create_graph=True, **options())
    (g,) = torch.autograd.grad(h.pow(2).sum(), x_leaf)
    assert g.abs().sum() > 0
    # and the same map without a graph
    torch.testing.assert_close(h.detach(), heatmap(model, x, y, method, **options()))


def test_batched_equals_unbatched(batch):
    model, x, y = batch
    full = attribute(model, x, y, "integrated-gradients", n_steps=8)
    for b in range(x.shape[0]):
        one = attribute(model, x[b : b + 1], y[b : b + 1], "integrated-gradients", n_steps=8)
        torch.testing.assert_close(full[b : b + 1], one)


def test_postprocess_by_hand():
    attr = torch.tensor([[[[1.0, -2.0], [0.0, 3.0]], [[-1.0, 1.0], [2.0, -1.0]]]])  # (1,2,2,2)
    h = postprocess(attr, "abs", "none")
    torch.testing.assert_close(h, torch.tensor([[[2.0, 3.0], [2.0, 4.0]]]))
    h = postprocess(attr, "relu", "none")
    torch.testing.assert_close(h, torch.tensor([[[1.0, 1.0], [2.0, 3.0]]]))
    h = postprocess(attr, "abs", "max")
    torch.testing.assert_close(h, torch.tensor([[[2.0, 3.0], [2.0, 4.0]]]) / (4 + 1e-8))
    h = postprocess(attr, "abs", "sum")
    torch.testing.assert_close(h.sum(), torch.tensor(1.0))
    h = postprocess(attr, "none", "absmax")
    torch.testing.assert_close(h, torch.tensor([[[0.0, -1.0], [2.0, 2.0]]]) / (2 + 1e-8))


def test_integration_nodes_sum_to_one():
    for rule in ("riemann_trapezoid", "riemann_middle", "gausslegendre"):
        alphas, weights = integration_nodes(7, rule)
        assert abs(sum(weights) - 1) < 1e-12
        assert min(alphas) >= 0 and max(alphas) <= 1


def test_unknown_method_and_option_are_config_errors(batch):
    model, x, y = batch
    with pytest.raises(ConfigError, match="did you mean 'smoothgrad'"):
        attribute(model, x, y, "smoothgrads")
    with pytest.raises(ConfigError, match="n_steps"):
        attribute(model, x, y, "grad", n_steps=3)
    with pytest.raises(ConfigError, match="integration rule"):
        attribute(model, x, y, "integrated-gradients", integration="simpson")
