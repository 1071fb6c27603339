"""The target-anchored contrastive loss of RTD (paper Eq. for L_TCL; official
`jaeseokbyun/RTD:utils.py::contrastive_loss`, itself SEARLE's PALAVRA-style NT-Xent).

Given N anchor/query pairs (k_i, q_i), let z = L2norm(cat(k, q)) hold 2N unit vectors and
let p(a) = a +- N be the partner of row a. Then

    L = -(1 / 2N) * sum_a log( exp(z_a . z_p(a) / tau) / sum_{b != a} exp(z_a . z_b / tau) )

The denominator runs over every other row, so anchor-anchor and query-query similarities
are negatives too (it is not CLIP's cross-entropy over the k x q block only). In RTD the
N pairs are the 2B of refined batch sampling, so z holds 4B vectors.

Deviation: the official code evaluates `exp` and divides (fp16-unsafe: 1 / 0.07 = 14.3 puts
exp at 1.6e6) and reads a module-global `device`; here the loss is a pure function in fp32
that uses log-sum-exp. The values agree with the official formula to float precision.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def target_anchored_contrastive_loss(
    anchors: torch.Tensor, queries: torch.Tensor, tau: float = 0.07
) -> torch.Tensor:
    """RTD's symmetric NT-Xent over anchors and queries.

    Args:
        anchors: (N, D) frozen text features of the anchors (target / reference captions);
            detached here, so gradients reach the trainable tower through the queries only.
        queries: (N, D) features of the pseudo-token queries, row i paired with anchor i.
        tau: temperature (RTD `--tau`, 0.07).

    Returns:
        Scalar loss (fp32), the mean over all 2N rows.
    """
    if anchors.shape != queries.shape or anchors.ndim != 2:
        raise ValueError(
            f"anchors and queries must both be (N, D); got {tuple(anchors.shape)} and "
            f"{tuple(queries.shape)}"
        )
    if tau <= 0:
        raise ValueError(f"tau must be positive, got {tau}")
    n = anchors.shape[0]
    z = torch.cat([anchors.detach().float(), queries.float()], dim=0)
    z = F.normalize(z, dim=-1)  # (2N, D)
    logits = z @ z.T / tau  # (2N, 2N)
    self_mask = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    rows = torch.arange(2 * n, device=z.device)
    partner = (rows + n) % (2 * n)
    log_prob = logits[rows, partner] - torch.logsumexp(logits, dim=1)
    return -log_prob.mean()
