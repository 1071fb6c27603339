"""The attack maths: manipulations of attribution maps, and random-perturbation similarity
(RPS). Pure tensor functions; the `robattr attack` workflow around them is `attack.py`.

Inputs are normalised batches x (B, C, H, W) with labels y (B,). Budgets `eps` and step
sizes are in pixel units of 1/255 and are converted per channel: radius_c = eps/255/std_c.
Every iterate is projected onto the l_inf ball around x and onto the valid pixel range per
channel, [(0 - mean_c)/std_c, (1 - mean_c)/std_c] (`PixelBox`). Randomness comes from a
`torch.Generator`. All functions are vectorised over the batch.

- `frame_attack`: the official targeted manipulation (`project/module/test_taps_saps.py`,
  `LitClassifierXAIAdvTester.get_adv_img`): minimise
  gamma * sum (h(x') - h_t)^2 / B + (1 - gamma) * MSE(logits(x'), logits(x)), h_t a border
  frame (5 px wide on 32x32, 35 on 224x224, scaled otherwise), with Adam (lr 4 eps / iters,
  as the code) or sign-PGD (as the paper's "PGD-l_inf (iter = 100)").
  Deviation: the official radius is eps/255 * 5 for every dataset (5 ~ 1/0.2023, CIFAR's
  std; too large on ImageNet, 1/0.229 = 4.37); here it is eps/255/std_c per channel.
  Deviation: the official clamps x' to [min(x), max(x)] of the whole batch; here each
  channel is clamped to its valid pixel range.
- `topk_attack`: Ghorbani et al. (AAAI 2019, `amiratag/InterpretationFragility`) top-k
  attack: sign steps that lower the mass of the clean top-k pixels in the sum-normalised
  map; each iterate is scored on the real model, iterates whose predicted label changed are
  rejected, and the iterate with the lowest top-k intersection is returned.
- `random_perturbation` / `rps_similarity`: the official `test_rps.py`: x + U(-eps, eps)/std,
  10 draws, similarity of the maps. Deviation: clamped per channel to the valid range (the
  official: the batch min/max), and the clean map is kept apart (the official loop
  sum-normalises `h_s` in place, so from the second draw on its max-normalised metrics
  compare a max-normalised h_r with a sum-normalised h_s).

ReLU networks have zero second derivatives almost everywhere, so attacks descend through a
Softplus(beta = 20) copy (`attack_surrogate`, as the official code and Ghorbani's NET2); the
caller's model is never modified. Label checks and reported maps use the real model.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from labshared.errors import ConfigError
from robattr_cli.attributions import heatmap
from robattr_cli.metrics import default_topk, similarity_report, topk_intersection
from robattr_cli.model import swap_activation

OPTIMIZERS = ("adam", "pgd")
SURROGATE_BETA = 20.0


@dataclass(frozen=True)
class PixelBox:
    """Per-channel normalisation of the inputs, giving radii and the valid range.

    Attributes:
        std: (1, C, 1, 1) normalisation std (pixels in [0, 1]).
        low, high: (1, C, 1, 1) normalised values of pixels 0 and 1.
    """

    std: torch.Tensor
    low: torch.Tensor
    high: torch.Tensor

    @classmethod
    def from_stats(
        cls, mean: Sequence[float], std: Sequence[float], device: torch.device | str | None = None
    ) -> PixelBox:
        m = torch.tensor(list(mean), dtype=torch.float32, device=device).view(1, -1, 1, 1)
        s = torch.tensor(list(std), dtype=torch.float32, device=device).view(1, -1, 1, 1)
        return cls(s, (0.0 - m) / s, (1.0 - m) / s)

    def radius(self, eps: float) -> torch.Tensor:
        """eps in pixels/255 -> (1, C, 1, 1) radius in normalised units."""
        return (eps / 255.0) / self.std

    def project(self, x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
        """Clamp onto the l_inf ball of `eps` pixels/255 around x, then the valid range.

        With x itself in the valid range the result is in both sets (clamping a point of
        the ball to the box keeps it in the ball, coordinate by coordinate).
        """
        r = self.radius(eps).to(x)
        x_adv = torch.minimum(torch.maximum(x_adv, x - r), x + r)
        return torch.minimum(torch.maximum(x_adv, self.low.to(x)), self.high.to(x))


def attack_surrogate(model: nn.Module, beta: float = SURROGATE_BETA) -> nn.Module:
    """The model to descend through: a Softplus(beta) deep copy when `model` has a ReLU
    (the caller's model is never changed), else `model` itself (already smooth)."""
    if not any(isinstance(m, nn.ReLU) for m in model.modules()):
        return model
    smooth = copy.deepcopy(model)
    for p in smooth.parameters():
        p.requires_grad_(False)
    return swap_activation(smooth, "softplus", beta).eval()


def frame_target(height: int, width: int, border: int | None = None) -> torch.Tensor:
    """Official target map h_t (H, W): ones on a border frame, zeros inside.

    The border is 5 px on 32x32 and 35 px on 224x224 (official `prepare_target`); other
    sizes scale it: round(5 * min(H, W) / 32).
    """
    border = border if border is not None else max(1, round(5 * min(height, width) / 32))
    target = torch.ones(height, width)
    target[border : height - border, border : width - border] = 0.0
    return target


def frame_attack(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    box: PixelBox,
    *,
    eps: float = 4.0,
    n_iter: int = 100,
    gamma: float = 0.5,
    optimizer: str = "adam",
    step_size: float | None = None,
    method: str = "grad",
    target_map: torch.Tensor | None = None,
    sign: str = "abs",
    normalize: str = "max",
    **attr_kwargs,
) -> torch.Tensor:
    """Official frame-target manipulation; returns x_adv (B, C, H, W), detached.

    Args:
        model: the network to descend through (pass `attack_surrogate(model)`).
        x, y: normalised inputs and their labels; box: per-channel range (`PixelBox`).
        eps: l_inf budget in pixels/255 (official 4; paper text 2 for ResNet-18).
        n_iter: iterations (official 100); gamma: map-loss weight (official 0.5).
        optimizer: `adam` (official code: lr = 4 eps / n_iter, on a pixel-unit variable so
            every channel moves by the same pixel step) or `pgd` (sign steps of
            `step_size` pixels/255, default 2.5 eps / n_iter).
        method, sign, normalize, attr_kwargs: the attribution and its post-processing.
        target_map: (H, W) target, default `frame_target`.
    """
    if optimizer not in OPTIMIZERS:
        raise ConfigError(f"--optimizer {optimizer!r}: expected one of {', '.join(OPTIMIZERS)}")
    if not 0.0 <= gamma <= 1.0:
        raise ConfigError(f"--gamma {gamma}: expected a weight in [0, 1]")
    _check_budget(eps, n_iter)
    x = x.detach()
    h_t = (target_map if target_map is not None else frame_target(*x.shape[-2:])).to(x)
    std = box.std.to(x)
    with torch.no_grad():
        logits_clean = model(x)
    delta = torch.zeros_like(x, requires_grad=True)  # pixel units (not normalised)
    adam = (
        torch.optim.Adam([delta], lr=4.0 * (eps / 255.0) / n_iter) if optimizer == "adam" else None
    )
    step = (step_size if step_size is not None else 2.5 * eps / n_iter) / 255.0
    for _ in range(n_iter):
        x_adv = x + delta / std
        h_adv = heatmap(
            model, x_adv, y, method, sign=sign, normalize=normalize, create_graph=True,
            **attr_kwargs,
        )  # fmt: skip
        loss_map = (h_adv - h_t).pow(2).sum() / x.shape[0]
        loss_out = F.mse_loss(model(x_adv), logits_clean)
        loss = gamma * loss_map + (1.0 - gamma) * loss_out
        if adam is not None:
            adam.zero_grad(set_to_none=True)
            loss.backward(inputs=[delta])
            adam.step()
        else:
            (g,) = torch.autograd.grad(loss, delta)
            with torch.no_grad():
                delta -= step * g.sign()
        with torch.no_grad():
            delta.copy_((box.project(x + delta / std, x, eps) - x) * std)
    return box.project(x + delta.detach() / std, x, eps)


@dataclass
class TopKResult:
    """Outcome of `topk_attack`, per image.

    Attributes:
        x_adv: (B, C, H, W) best label-preserving iterate (x itself when none improved).
        intersection: (B,) top-k intersection of its map with the clean map (lower = stronger).
        rejected: (B,) iterates refused because the predicted label changed.
    """

    x_adv: torch.Tensor
    intersection: torch.Tensor
    rejected: torch.Tensor


def topk_attack(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    box: PixelBox,
    *,
    surrogate: nn.Module | None = None,
    eps: float = 8.0,
    n_iter: int = 100,
    step_size: float | None = None,
    k: int | None = None,
    method: str = "grad",
    **attr_kwargs,
) -> TopKResult:
    """Ghorbani top-k attack on the abs, channel-summed, sum-normalised map.

    Each step: x' <- Proj(x' - step * sign(grad_x' sum_{i in K} s_i(x'))), K the clean top-k
    pixels, gradients through `surrogate` (default `attack_surrogate(model)`). Each iterate
    is scored on `model`: its top-k intersection with the clean map, or rejected when its
    predicted label differs from the clean prediction.

    Args:
        eps: l_inf budget in pixels/255 (Ghorbani ImageNet 8); n_iter: steps (100);
        step_size: pixels/255 per sign step (default 2.5 eps / n_iter);
        k: top-k size (default `metrics.default_topk`: 100 on 32x32, 1000 on 224x224).
    """
    _check_budget(eps, n_iter)
    surrogate = surrogate if surrogate is not None else attack_surrogate(model)
    x = x.detach()
    std = box.std.to(x)
    step = (step_size if step_size is not None else 2.5 * eps / n_iter) / 255.0
    h0 = heatmap(model, x, y, method, normalize="sum", **attr_kwargs).detach()  # (B, H, W)
    hw = h0[0].numel()
    k = k if k is not None else default_topk(h0)
    if not 0 < k <= hw:
        raise ConfigError(f"--k {k}: expected 1..{hw} (pixels per map)")
    top_mask = torch.zeros_like(h0.flatten(1)).scatter_(1, h0.flatten(1).topk(k, 1).indices, 1.0)
    with torch.no_grad():
        pred0 = model(x).argmax(1)
    best_x, best = x.clone(), torch.ones(x.shape[0], device=x.device, dtype=x.dtype)
    rejected = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    # A smooth model is its own surrogate: the map it descends through at iterate t+1 is
    # the map that scores iterate t, so it is computed once (saves a third of the cost).
    shared = surrogate is model
    flipped = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    x_adv = x.clone()
    for it in range(n_iter):
        x_adv.requires_grad_(True)
        s = heatmap(surrogate, x_adv, y, method, normalize="sum", create_graph=True, **attr_kwargs)
        if shared and it > 0:
            best, best_x = _keep_best(s.detach(), x_adv.detach(), h0, k, flipped, best, best_x)
        mass = (s.flatten(1) * top_mask).sum()
        (g,) = torch.autograd.grad(mass, x_adv)
        with torch.no_grad():
            x_adv = box.project(x_adv - step / std * g.sign(), x, eps)
            flipped = model(x_adv).argmax(1) != pred0
        rejected += flipped.long()
        if not shared or it == n_iter - 1:
            h = heatmap(model, x_adv, y, method, normalize="sum", **attr_kwargs).detach()
            best, best_x = _keep_best(h, x_adv, h0, k, flipped, best, best_x)
    return TopKResult(best_x, best, rejected)


def _keep_best(
    h: torch.Tensor,
    x_adv: torch.Tensor,
    h0: torch.Tensor,
    k: int,
    flipped: torch.Tensor,
    best: torch.Tensor,
    best_x: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ghorbani's selection: keep the iterate if its label held and its top-k intersection
    with the clean map `h0` is the lowest so far. Returns the updated (best, best_x)."""
    score = topk_intersection(h, h0, k)
    better = ~flipped & (score < best)
    return torch.where(better, score, best), torch.where(better.view(-1, 1, 1, 1), x_adv, best_x)


def random_perturbation(
    x: torch.Tensor, box: PixelBox, eps: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """x + U(-1, 1) * eps/255/std_c, clamped per channel to the valid range (official
    `test_rps.py` noise; Deviation: per-channel clamp instead of the batch min/max)."""
    device = generator.device if generator is not None else x.device
    u = torch.rand(x.shape, generator=generator, device=device).to(x)
    x_r = x + (2.0 * u - 1.0) * box.radius(eps).to(x)
    return torch.minimum(torch.maximum(x_r, box.low.to(x)), box.high.to(x))


def rps_similarity(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    box: PixelBox,
    *,
    eps: float = 8.0,
    n_draws: int = 10,
    noise_generator: torch.Generator | None = None,
    method: str = "grad",
    k: int | None = None,
    **attr_kwargs,
) -> dict[str, torch.Tensor]:
    """Random Perturbation Similarity: metrics of h(x_r) against h(x), averaged over draws.

    `noise_generator` draws the perturbations (SmoothGrad's own generator, if any, goes
    in `attr_kwargs`). Maps are abs, channel-summed and max-normalised; `ssim_sumnorm`
    repeats SSIM after sum-normalisation (official `test_rps.py`). Returns {metric: (B,)}
    (`similarity_report` keys).
    """
    if n_draws < 1:
        raise ConfigError(f"--n-draws {n_draws}: expected at least 1")
    h_s = heatmap(model, x, y, method, **attr_kwargs).detach()
    totals: dict[str, torch.Tensor] = {}
    for _ in range(n_draws):
        x_r = random_perturbation(x, box, eps, noise_generator)
        h_r = heatmap(model, x_r, y, method, **attr_kwargs).detach()
        for key, value in similarity_report(h_r, h_s, k=k).items():
            totals[key] = totals.get(key, 0.0) + value / n_draws
    return totals


def _check_budget(eps: float, n_iter: int) -> None:
    if eps < 0:
        raise ConfigError(f"--eps {eps}: expected a budget >= 0 in pixels/255")
    if n_iter < 1:
        raise ConfigError(f"--n-iter {n_iter}: expected at least 1 iteration")
