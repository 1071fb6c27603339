"""The gap-constrained linear projector from CLIP space to the classifier's feature space.

Implements `TLDR:last_layer_retrain/tldr.py:L92-151` (`--proj_method analytic`) and the
modality gap of `get_modality_gap` (L207-242):

    min_W ||Y - X W||^2 + lambda ||W||^2   subject to   g W = 0

with X (N, d_clip) raw CLIP image embeddings of the classifier's training images, Y (N,
d_phi) the classifier's penultimate features of the same images, and g (1, d_clip) the mean
CLIP modality gap (image embedding minus caption embedding). With A = X^T X + lambda I and
beta = A^-1 X^T Y the closed form is

    W* = beta - A^-1 g^T (g A^-1 g^T)^-1 g beta,        b = mean_rows(Y - X W*)

solved in float64. Because g W* = 0, a text embedding t and t + g map to the same point:
the mean image-text offset is invisible to the projector. An equivalent form (tested):
plain ridge on gap-projected inputs, W* = (Pi X^T X Pi + lambda I)^-1 Pi X^T Y with
Pi = I - u u^T, u = g / |g|.

The sufficient statistics (X^T X, X^T Y, column means) are accumulated in row chunks, so a
CelebA-sized Y (162,770 x 2048) is never held in float64 at once.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

DEFAULT_LAMBDA = 50.0  # `--proj_weight_decay 50` in TLDR:script.sh


def modality_gap(img_emb: torch.Tensor, txt_emb: torch.Tensor) -> torch.Tensor:
    """Mean CLIP modality gap over paired image/caption embeddings.

    Args:
        img_emb: (N, D) raw (unnormalised) CLIP image embeddings.
        txt_emb: (N, D) raw CLIP text embeddings of the matching captions.

    Returns:
        (D,) float64 tensor, mean_i (img_i - txt_i).
    """
    if img_emb.shape != txt_emb.shape or img_emb.ndim != 2:
        raise ValueError(
            f"modality_gap needs two (N, D) tensors of one shape; got {tuple(img_emb.shape)} "
            f"and {tuple(txt_emb.shape)}"
        )
    if img_emb.shape[0] == 0:
        raise ValueError("modality_gap needs at least one image-caption pair")
    return (img_emb.double() - txt_emb.double()).mean(dim=0)


def ridge_statistics(
    chunks: Iterable[tuple[torch.Tensor, torch.Tensor]],
) -> dict[str, torch.Tensor]:
    """Accumulate X^T X, X^T Y, the column sums and N over (X, Y) row chunks in float64."""
    xtx = xty = sx = sy = None
    n = 0
    for x, y in chunks:
        x, y = x.double(), y.double()
        if xtx is None:
            xtx = torch.zeros(x.shape[1], x.shape[1], dtype=torch.float64, device=x.device)
            xty = torch.zeros(x.shape[1], y.shape[1], dtype=torch.float64, device=x.device)
            sx = torch.zeros(x.shape[1], dtype=torch.float64, device=x.device)
            sy = torch.zeros(y.shape[1], dtype=torch.float64, device=x.device)
        xtx += x.T @ x
        xty += x.T @ y
        sx += x.sum(0)
        sy += y.sum(0)
        n += x.shape[0]
    if xtx is None or n == 0:
        raise ValueError("ridge_statistics got no rows")
    return {"xtx": xtx, "xty": xty, "sum_x": sx, "sum_y": sy, "n": torch.tensor(n)}


def solve_gap_ridge_from_stats(
    stats: dict[str, torch.Tensor], gap: torch.Tensor | None, lam: float = DEFAULT_LAMBDA
) -> tuple[torch.Tensor, torch.Tensor]:
    """Closed-form constrained ridge (module docstring) from `ridge_statistics`.

    Args:
        stats: output of `ridge_statistics`.
        gap: (D_clip,) modality gap g, or None for plain (unconstrained) ridge.
        lam: the ridge penalty lambda (> 0).

    Returns:
        (W, b): W (D_clip, D_phi) and b (D_phi,), both float64.
    """
    if lam <= 0:
        raise ValueError(f"the ridge penalty lambda must be > 0 (got {lam})")
    xtx, xty = stats["xtx"].double(), stats["xty"].double()
    d = xtx.shape[0]
    a = xtx + lam * torch.eye(d, dtype=torch.float64, device=xtx.device)
    chol = torch.linalg.cholesky(a)  # A is symmetric positive definite for lambda > 0
    beta = torch.cholesky_solve(xty, chol)  # (D_clip, D_phi)
    w = beta
    if gap is not None:
        g = gap.double().reshape(1, d).to(xtx.device)  # (1, D_clip)
        a_inv_gt = torch.cholesky_solve(g.T, chol)  # (D_clip, 1)
        denom = g @ a_inv_gt  # (1, 1), g A^-1 g^T > 0
        w = beta - a_inv_gt @ ((g @ beta) / denom)
    n = float(stats["n"])
    b = stats["sum_y"].double() / n - (stats["sum_x"].double() / n) @ w
    return w, b


def solve_gap_ridge(
    x: torch.Tensor,
    y: torch.Tensor,
    gap: torch.Tensor | None,
    lam: float = DEFAULT_LAMBDA,
    chunk_rows: int = 16384,
) -> tuple[torch.Tensor, torch.Tensor]:
    """W*, b of the gap-constrained ridge for in-memory X (N, D_clip), Y (N, D_phi)."""
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(
            f"solve_gap_ridge needs X (N, D_clip) and Y (N, D_phi) with one N; got "
            f"{tuple(x.shape)} and {tuple(y.shape)}"
        )
    chunks = (
        (x[i : i + chunk_rows], y[i : i + chunk_rows]) for i in range(0, x.shape[0], chunk_rows)
    )
    return solve_gap_ridge_from_stats(ridge_statistics(chunks), gap, lam)


class Projector(nn.Module):
    """`TLDR:models/projector.py`: Linear(D_clip -> D_phi) with weight W*^T and bias b, then
    ReLU when the classifier's features are post-ReLU (ResNet pooled features). Frozen."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, relu: bool = True) -> None:
        super().__init__()
        d_clip, d_phi = weight.shape
        self.linear = nn.Linear(d_clip, d_phi)
        with torch.no_grad():
            self.linear.weight.copy_(weight.T.float())
            self.linear.bias.copy_(bias.float())
        self.relu = relu
        self.requires_grad_(False)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:  # (B, D_clip) -> (B, D_phi)
        out = self.linear(emb.to(self.linear.weight.dtype))
        return torch.relu(out) if self.relu else out

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """W (D_clip, D_phi) and b for safetensors."""
        return {
            "weight": self.linear.weight.detach().T.contiguous(),
            "bias": self.linear.bias.detach(),
        }

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], relu: bool = True) -> Projector:
        return cls(tensors["weight"], tensors["bias"], relu=relu)
