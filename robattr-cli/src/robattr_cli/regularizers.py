"""Attribution-robustness regularisers, as pure functions of (model, inputs, labels, noise).

The attribution is the input gradient of the true-class logit, g(x) = d f_y(x) / dx, taken
with respect to the normalised input (official `pl_l2_plus_cosd_classifier.py`).

- `l2cos` (the paper's local gradient alignment, official `LitL2PlusCosdClassifier`):
      R = lambda_l2 * mean_b ||g(x) - g(x + delta)||^2
          + lambda_cos * (1 - mean_b cos(g(x), g(x + delta))) / 2
  with g(x) detached by default (`--detach_source_grad True` in the official code), so only
  g(x + delta) carries the double-backprop graph; no third-order terms.
- `l2`, `cos`: the two ablations (one term each).
- `hessian` (official `LitHessianClassifier`, Dombrowski-style): one Hutchinson sample,
      R = lambda_hessian * mean_b ||d/dx (v^T g(x))||^2 = lambda_hessian * mean_b ||H(x) v||^2,
  v ~ N(0, I); training it needs a third-order backward.
- `none`: cross-entropy only.

delta is random, not adversarial: (eps / 255) / std_c * U(-1, 1) (`uniform`) or
(eps / 255) / std_c * N(0, 1) (`gaussian`), an l_inf box of eps/255 in [0, 1] pixel units
converted to normalised units per channel; x + delta is not clamped (as in the official code).

Callers run these in fp32, outside autocast: double backprop is fragile in half precision.
Randomness comes only from the `torch.Generator` passed in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

PERTURBATIONS = ("uniform", "gaussian")


class CleanPass(NamedTuple):
    """A forward pass on clean inputs that the regulariser may reuse (saves one forward).

    Attributes:
        x: the clean input (B, C, H, W), requiring grad, that produced `logits`.
        logits: model(x), (B, K), in fp32 and with its graph.
    """

    x: torch.Tensor
    logits: torch.Tensor


@dataclass(frozen=True)
class RegSpec:
    """Weights and noise of a regulariser.

    Attributes:
        eps: noise radius in pixel units of 1/255 (4 means 4/255).
        std: per-channel normalisation std of the dataset (converts eps to input units).
        lambda_l2: weight of the squared l2 gradient distance.
        lambda_cos: weight of the cosine distance (1 - cos) / 2.
        lambda_hessian: weight of the Hutchinson ||H v||^2 term.
        perturb: "uniform" or "gaussian".
        detach_clean_grad: treat g(x) as a constant target (official default).
    """

    eps: float = 4.0
    std: tuple[float, ...] = (1.0,)
    lambda_l2: float = 1.0
    lambda_cos: float = 1.0
    lambda_hessian: float = 1.0
    perturb: str = "uniform"
    detach_clean_grad: bool = True


class RegOutput(NamedTuple):
    """The weighted penalty to add to the loss, and its unweighted parts for logging."""

    penalty: torch.Tensor
    terms: dict[str, torch.Tensor]


def true_class_grad(
    logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor, create_graph: bool
) -> torch.Tensor:
    """d (sum_b logits[b, y_b]) / dx, i.e. each example's true-class logit gradient.

    Args:
        logits: (B, K) computed from `x` (which requires grad).
        x: (B, C, H, W) normalised input.
        y: (B,) int labels.
        create_graph: keep the graph so the gradient can be differentiated again.

    Returns:
        (B, C, H, W) gradient. The graph of `logits` is retained for later backward calls.
    """
    selected = logits.gather(1, y[:, None]).sum()
    (grad,) = torch.autograd.grad(selected, x, create_graph=create_graph, retain_graph=True)
    return grad


def logit_input_gradient(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, create_graph: bool = False
) -> torch.Tensor:
    """g(x) = d f_y(x) / dx for a batch (the attribution the paper makes robust).

    Args:
        model: classifier on normalised inputs.
        x: (B, C, H, W) normalised input (a detached copy is differentiated).
        y: (B,) int labels.
        create_graph: keep the graph for double backprop (training, attacks).

    Returns:
        (B, C, H, W) gradient of the true-class logit with respect to the input.
    """
    x = x.detach().requires_grad_(True)
    return true_class_grad(model(x), x, y, create_graph)


def sample_delta(
    x: torch.Tensor, eps: float, std: tuple[float, ...], perturb: str, generator: torch.Generator
) -> torch.Tensor:
    """Random input noise in normalised units: (eps/255)/std_c times U(-1, 1) or N(0, 1).

    Returns:
        (B, C, H, W) tensor like `x`, drawn from `generator` (on `x`'s device).
    """
    if perturb not in PERTURBATIONS:
        raise ValueError(f"perturb {perturb!r}: expected one of {', '.join(PERTURBATIONS)}")
    scale = eps / 255.0 / torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    if perturb == "uniform":
        unit = 2 * torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) - 1
    else:
        unit = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return scale * unit


def gradient_alignment_terms(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    delta: torch.Tensor,
    detach_clean_grad: bool = True,
    clean: CleanPass | None = None,
) -> dict[str, torch.Tensor]:
    """Unweighted l2 and cosine-distance terms between g(x) and g(x + delta).

    Args:
        model: classifier on normalised inputs (in fp32).
        x: (B, C, H, W) clean normalised input.
        y: (B,) labels.
        delta: (B, C, H, W) noise in normalised units.
        detach_clean_grad: g(x) is a constant target (no graph through it).
        clean: a forward pass on `x` to reuse for g(x) instead of a new one.

    Returns:
        {"l2": mean_b ||g - g'||^2 (summed over C*H*W), "cosd": (1 - mean_b cos(g, g')) / 2},
        scalars differentiable w.r.t. the parameters.
    """
    create = not detach_clean_grad
    if clean is None:
        grad = logit_input_gradient(model, x, y, create_graph=create)
    else:
        grad = true_class_grad(clean.logits, clean.x, y, create_graph=create)
    if detach_clean_grad:
        grad = grad.detach()
    # The official code re-creates x + delta as a detached leaf: the noise is not trained.
    grad_r = logit_input_gradient(model, x + delta, y, create_graph=True)
    flat, flat_r = grad.flatten(1), grad_r.flatten(1)  # (B, C*H*W)
    cos = F.cosine_similarity(flat, flat_r, dim=1, eps=1e-8).mean()
    l2 = (flat - flat_r).square().sum(dim=1).mean()
    return {"l2": l2, "cosd": (1 - cos) / 2}


def hessian_term(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    v: torch.Tensor,
    clean: CleanPass | None = None,
) -> torch.Tensor:
    """mean_b ||d/dx (v_b . g(x_b))||^2 = mean_b ||H(x_b) v_b||^2 (one Hutchinson sample
    of ||H||_F^2 when v ~ N(0, I)); differentiable w.r.t. the parameters.

    Args:
        v: (B, C, H, W) probe vectors.
    """
    if clean is None:
        x_leaf = x.detach().requires_grad_(True)
        logits = model(x_leaf)
    else:
        x_leaf, logits = clean
    grad = true_class_grad(logits, x_leaf, y, create_graph=True)
    (hv,) = torch.autograd.grad((grad * v).sum(), x_leaf, create_graph=True, retain_graph=True)
    return hv.flatten(1).square().sum(dim=1).mean()


# --------------------------------------------------------------------------- registry
Regularizer = Callable[..., RegOutput]


def _none(model, x, y, spec, generator, clean=None) -> RegOutput:
    return RegOutput(x.new_zeros(()), {})


def _alignment(which: str) -> Regularizer:
    def regularize(model, x, y, spec: RegSpec, generator, clean=None) -> RegOutput:
        delta = sample_delta(x, spec.eps, spec.std, spec.perturb, generator)
        terms = gradient_alignment_terms(model, x, y, delta, spec.detach_clean_grad, clean)
        penalty = x.new_zeros(())
        if which in ("l2cos", "l2"):
            penalty = penalty + spec.lambda_l2 * terms["l2"]
        if which in ("l2cos", "cos"):
            penalty = penalty + spec.lambda_cos * terms["cosd"]
        return RegOutput(penalty, terms)

    regularize.__name__ = which
    return regularize


def _hessian(model, x, y, spec: RegSpec, generator, clean=None) -> RegOutput:
    v = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    term = hessian_term(model, x, y, v, clean)
    return RegOutput(spec.lambda_hessian * term, {"hessian": term})


#: name -> f(model, x, y, spec: RegSpec, generator, clean: CleanPass | None) -> RegOutput
REGULARIZERS: dict[str, Regularizer] = {
    "none": _none,
    "l2cos": _alignment("l2cos"),
    "l2": _alignment("l2"),
    "cos": _alignment("cos"),
    "hessian": _hessian,
}

#: Which regularisers differentiate through g(x) on the clean input (so a reused clean
#: pass must keep its graph) and which need the clean gradient at all.
NEEDS_CLEAN_GRAD = {"l2cos", "l2", "cos", "hessian"}
