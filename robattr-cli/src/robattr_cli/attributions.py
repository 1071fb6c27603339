"""Differentiable attribution maps with one Captum-like verb, and their post-processing.

Every method explains the **true-class logit** f_y(x) with respect to the **normalised**
input x (after mean/std), as the official `utils/interpreter.py` (joshua840/RobustAGA)
does, and returns a tensor shaped like x. With `create_graph=True` the map stays in the
autograd graph (of x and of the parameters), so attacks can descend through it; Captum's
maps are detached (its `compute_gradients` has no `create_graph`), so Captum is used only
to cross-check these in the tests.

Methods (`ATTRIBUTIONS`):

- `grad`: d f_y / d x (Simonyan et al. 2014; official `grad`).
- `input-x-grad`: x * d f_y / d x with x the *normalised* input (official `xgrad`), so a
  pixel equal to the dataset mean gets zero attribution.
- `integrated-gradients`: true IG (Sundararajan et al. 2017),
  (x - x0) * integral_0^1 grad f_y(x0 + a (x - x0)) da, the integral by a quadrature rule
  (trapezoid by default; Gauss-Legendre and midpoint as in Captum). Baseline x0 = 0 in
  normalised space (the dataset-mean image), as the official code.
- `path-averaged-grad`: the official `intgrad` exactly: sum of the gradients at the 51
  points a = 0, 1/50, ..., 1 divided by 50, *not* multiplied by (x - x0).
  Deviation: the official code calls this integrated gradients; here `integrated-gradients`
  is the true IG and this variant must be asked for by name.
- `smoothgrad`: mean of `grad` at x + N(0, sigma^2) (Smilkov et al. 2017), sigma =
  noise_level * (max(x) - min(x)). Deviation: the official code takes max/min over the
  whole batch (an image's map then depends on its batch-mates) and reads
  `hparams.int_sg_iter/int_sg_alpha`, which no parser defines, so it crashes as shipped;
  here the range is per image and the settings are arguments (`n_samples`, `noise_level`).

Post-processing (`postprocess`, official `Interpreter.get_heatmap`): abs (or ReLU), sum over
channels, then divide by the per-image max (`max`, the official `standard`), by the max of
|h| (`absmax`) or by the sum (`sum`), each with the official + 1e-8.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from labshared.config import unknown_name
from labshared.errors import ConfigError

INTEGRATION_RULES = ("riemann_trapezoid", "riemann_middle", "gausslegendre")
SIGNS = ("abs", "relu", "none")
NORMALIZATIONS = ("max", "absmax", "sum", "none")
NORM_EPS = 1e-8  # the official get_heatmap's denominator guard
DEFAULT_CHUNK = 256  # forward passes per autograd call inside IG / SmoothGrad


def _input_leaf(x: torch.Tensor, create_graph: bool) -> torch.Tensor:
    """x itself when the caller wants a graph through x; otherwise a fresh leaf."""
    if create_graph and x.requires_grad:
        return x
    return x.detach().requires_grad_(True)


def _logit_grad(
    model: nn.Module, x: torch.Tensor, target: torch.Tensor, create_graph: bool
) -> torch.Tensor:
    """d f_target(x) / d x for a batch; x must require grad (leaf or not)."""
    with torch.enable_grad():
        logits = model(x)  # (N, K)
        chosen = logits.gather(1, target.reshape(-1, 1)).sum()
        (grad,) = torch.autograd.grad(chosen, x, create_graph=create_graph)
    return grad


def _check_target(x: torch.Tensor, target: torch.Tensor | int) -> torch.Tensor:
    if isinstance(target, int):
        target = torch.full((x.shape[0],), target, dtype=torch.long, device=x.device)
    target = target.to(device=x.device, dtype=torch.long).reshape(-1)
    if target.shape[0] != x.shape[0]:
        raise ConfigError(f"target has {target.shape[0]} labels for a batch of {x.shape[0]} inputs")
    return target


def grad(
    model: nn.Module, x: torch.Tensor, target: torch.Tensor, *, create_graph: bool = False
) -> torch.Tensor:
    """Saliency: d f_y / d x. Args: x (B, C, H, W) normalised; target (B,) class ids."""
    return _logit_grad(model, _input_leaf(x, create_graph), target, create_graph)


def input_x_grad(
    model: nn.Module, x: torch.Tensor, target: torch.Tensor, *, create_graph: bool = False
) -> torch.Tensor:
    """x * d f_y / d x, with x the normalised input (official `xgrad`)."""
    xin = _input_leaf(x, create_graph)
    return xin * _logit_grad(model, xin, target, create_graph)


def integration_nodes(n_steps: int, rule: str) -> tuple[list[float], list[float]]:
    """Quadrature nodes a_s in [0, 1] and weights w_s with sum w_s = 1 (int_0^1 g ~ sum w g).

    `riemann_trapezoid`: a = linspace(0, 1, n), w = 1/(n-1) with both ends halved (exact for
    integrands linear in a). `riemann_middle`: a = (s + 1/2)/n, w = 1/n (Captum's
    `riemann_middle`). `gausslegendre`: n-point Gauss-Legendre on [0, 1] (Captum's default).
    """
    if rule not in INTEGRATION_RULES:
        raise ConfigError(
            f"integration rule {rule!r}: expected one of {', '.join(INTEGRATION_RULES)}"
        )
    if n_steps < (2 if rule == "riemann_trapezoid" else 1):
        raise ConfigError(f"n_steps={n_steps}: the {rule} rule needs at least 2 (1 for others)")
    if rule == "riemann_trapezoid":
        alphas = np.linspace(0.0, 1.0, n_steps)
        weights = np.full(n_steps, 1.0 / (n_steps - 1))
        weights[[0, -1]] /= 2
    elif rule == "riemann_middle":
        alphas = (np.arange(n_steps) + 0.5) / n_steps
        weights = np.full(n_steps, 1.0 / n_steps)
    else:
        nodes, w = np.polynomial.legendre.leggauss(n_steps)
        alphas, weights = 0.5 * (nodes + 1.0), 0.5 * w
    return alphas.tolist(), weights.tolist()


def _path_grad_sum(
    model: nn.Module,
    x: torch.Tensor,
    baseline: torch.Tensor,
    target: torch.Tensor,
    alphas: list[float],
    weights: list[float],
    create_graph: bool,
    internal_batch_size: int | None,
) -> torch.Tensor:
    """sum_s w_s grad f_y(x0 + a_s (x - x0)), evaluated in chunks of whole batches."""
    batch = x.shape[0]
    per_call = max(1, (internal_batch_size or DEFAULT_CHUNK) // batch)
    total = torch.zeros_like(x)
    for start in range(0, len(alphas), per_call):
        a = torch.tensor(alphas[start : start + per_call], dtype=x.dtype, device=x.device)
        w = torch.tensor(weights[start : start + per_call], dtype=x.dtype, device=x.device)
        shape = (-1,) + (1,) * x.dim()
        points = baseline + a.view(shape) * (x - baseline)  # (S, B, C, H, W)
        points = points.reshape(-1, *x.shape[1:])
        if not create_graph:
            points = points.detach().requires_grad_(True)
        grads = _logit_grad(model, points, target.repeat(len(a)), create_graph)
        total = total + (w.view(shape) * grads.view(len(a), *x.shape)).sum(0)
    return total


def integrated_gradients(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    *,
    create_graph: bool = False,
    baseline: torch.Tensor | float | None = None,
    n_steps: int = 50,
    integration: str = "riemann_trapezoid",
    internal_batch_size: int | None = None,
) -> torch.Tensor:
    """True integrated gradients: (x - x0) * int_0^1 grad f_y(x0 + a (x - x0)) da.

    Completeness: the attributions sum to f_y(x) - f_y(x0) up to the quadrature error.

    Args:
        x: (B, C, H, W) normalised inputs. baseline: x0, a tensor broadcastable to x or a
            float; default 0 (normalised space, i.e. the dataset-mean image).
        n_steps: quadrature points; integration: one of INTEGRATION_RULES.
        internal_batch_size: forward passes per autograd call (memory bound).
    """
    xin = _input_leaf(x, create_graph)
    base = _baseline(xin, baseline)
    alphas, weights = integration_nodes(n_steps, integration)
    avg = _path_grad_sum(
        model, xin, base, target, alphas, weights, create_graph, internal_batch_size
    )
    return (xin - base) * avg


def path_averaged_grad(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    *,
    create_graph: bool = False,
    baseline: torch.Tensor | float | None = None,
    n_steps: int = 50,
    internal_batch_size: int | None = None,
) -> torch.Tensor:
    """The official `Interpreter.int_grad`: (1/m) sum_{k=0..m} grad f_y(x0 + (k/m)(x - x0)).

    m = n_steps (official 50, so 51 points divided by 50); no (x - x0) factor, so this is
    not integrated gradients. Kept only to reproduce the official numbers.
    """
    xin = _input_leaf(x, create_graph)
    base = _baseline(xin, baseline)
    alphas = [k / n_steps for k in range(n_steps + 1)]
    weights = [1.0 / n_steps] * (n_steps + 1)
    return _path_grad_sum(
        model, xin, base, target, alphas, weights, create_graph, internal_batch_size
    )


def _baseline(x: torch.Tensor, baseline: torch.Tensor | float | None) -> torch.Tensor:
    if baseline is None:
        return torch.zeros_like(x)
    if isinstance(baseline, int | float):
        return torch.full_like(x, float(baseline))
    return baseline.to(device=x.device, dtype=x.dtype).expand_as(x)


def smoothgrad(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    *,
    create_graph: bool = False,
    n_samples: int = 50,
    noise_level: float = 0.1,
    generator: torch.Generator | None = None,
    internal_batch_size: int | None = None,
) -> torch.Tensor:
    """SmoothGrad: (1/n) sum_i grad f_y(x + e_i), e_i ~ N(0, sigma_b^2),
    sigma_b = noise_level * (max(x_b) - min(x_b)) per image (detached: a scale, not a path).

    Noise is drawn as (B, n, C, H, W) from `generator` (the global RNG when None), the
    layout of Captum's `NoiseTunnel` (`repeat_interleave`), so with the same seed and one
    chunk both draw the same noise.
    """
    if n_samples < 1:
        raise ConfigError(f"n_samples={n_samples}: SmoothGrad needs at least one sample")
    xin = _input_leaf(x, create_graph)
    batch, rest = xin.shape[0], xin.shape[1:]
    flat = xin.detach().reshape(batch, -1)
    sigma = noise_level * (flat.max(1).values - flat.min(1).values)  # (B,)
    sigma = sigma.view(batch, 1, *([1] * len(rest)))
    per_call = max(1, (internal_batch_size or DEFAULT_CHUNK) // batch)
    noise_device = generator.device if generator is not None else xin.device
    total = torch.zeros_like(xin)
    for start in range(0, n_samples, per_call):
        n = min(per_call, n_samples - start)
        noise = torch.randn((batch, n, *rest), generator=generator, device=noise_device)
        noisy = xin.unsqueeze(1) + sigma * noise.to(device=xin.device, dtype=xin.dtype)
        noisy = noisy.reshape(batch * n, *rest)
        if not create_graph:
            noisy = noisy.detach().requires_grad_(True)
        grads = _logit_grad(model, noisy, target.repeat_interleave(n), create_graph)
        total = total + grads.view(batch, n, *rest).sum(1)
    return total / n_samples


AttributionFn = Callable[..., torch.Tensor]
ATTRIBUTIONS: dict[str, AttributionFn] = {
    "grad": grad,
    "input-x-grad": input_x_grad,
    "integrated-gradients": integrated_gradients,
    "path-averaged-grad": path_averaged_grad,
    "smoothgrad": smoothgrad,
}


def check_method(method: str) -> str:
    """Return `method` if registered, else raise naming the known ones and the closest."""
    if method not in ATTRIBUTIONS:
        raise unknown_name("--method", method, ATTRIBUTIONS)
    return method


def attribute(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor | int,
    method: str = "grad",
    *,
    create_graph: bool = False,
    **kwargs,
) -> torch.Tensor:
    """Attribution of the true-class logit for a batch, shaped like x.

    Args:
        model: maps (B, C, H, W) normalised inputs to (B, K) logits; put it in eval mode.
        x: (B, C, H, W) normalised inputs. With `create_graph=True` and x requiring grad,
            the result is differentiable in x (and in the parameters).
        target: (B,) class ids (or one int for all).
        method: a key of ATTRIBUTIONS; kwargs go to that method (n_steps, baseline,
            integration, n_samples, noise_level, generator, internal_batch_size).
    Raises:
        ConfigError: unknown method or a bad option for it.
    """
    fn = ATTRIBUTIONS[check_method(method)]
    target = _check_target(x, target)
    try:
        return fn(model, x, target, create_graph=create_graph, **kwargs)
    except TypeError as exc:
        if "unexpected keyword" in str(exc):
            raise ConfigError(f"attribution {method!r}: {exc}") from None
        raise


def postprocess(
    attr: torch.Tensor, sign: str = "abs", normalize: str = "max", eps: float = NORM_EPS
) -> torch.Tensor:
    """(B, C, H, W) attribution -> (B, H, W) heat map (official `get_heatmap`).

    sign: `abs` (official default), `relu` (official `thres`) or `none`; then channel sum;
    normalize: `max` (official `standard`: h / (max h + eps)), `absmax` (h / (max|h| + eps)),
    `sum` (h / (sum h + eps)) or `none`. Differentiable.
    """
    if sign not in SIGNS:
        raise ConfigError(f"heat-map sign {sign!r}: expected one of {', '.join(SIGNS)}")
    if normalize not in NORMALIZATIONS:
        raise ConfigError(
            f"heat-map normalisation {normalize!r}: expected one of {', '.join(NORMALIZATIONS)}"
        )
    h = attr.abs() if sign == "abs" else attr.clamp_min(0) if sign == "relu" else attr
    h = h.sum(1) if h.dim() == 4 else h  # (B, H, W)
    flat = h.flatten(1)
    if normalize == "max":
        h = h / (flat.max(1).values.view(-1, 1, 1) + eps)
    elif normalize == "absmax":
        h = h / (flat.abs().max(1).values.view(-1, 1, 1) + eps)
    elif normalize == "sum":
        h = h / (flat.sum(1).view(-1, 1, 1) + eps)
    return h


def heatmap(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor | int,
    method: str = "grad",
    *,
    sign: str = "abs",
    normalize: str = "max",
    create_graph: bool = False,
    **kwargs,
) -> torch.Tensor:
    """`postprocess(attribute(...))`: the (B, H, W) map every metric and attack works on."""
    attr = attribute(model, x, target, method, create_graph=create_graph, **kwargs)
    return postprocess(attr, sign=sign, normalize=normalize)
