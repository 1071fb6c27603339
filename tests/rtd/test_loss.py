"""RTD's target-anchored contrastive loss against a hand-computed case, a direct loop over
the formula, and the official exp/divide formulation."""

import math

import pytest
import torch
import torch.nn.functional as F

from rtd_cli.loss import target_anchored_contrastive_loss


def loop_loss(k: torch.Tensor, q: torch.Tensor, tau: float) -> float:
    """The formula read literally: one Python term per row, one per denominator entry."""
    z = [F.normalize(v, dim=0) for v in torch.cat([k, q]).double()]
    n2 = len(z)
    total = 0.0
    for a in range(n2):
        p = (a + n2 // 2) % n2
        num = math.exp(float(z[a] @ z[p]) / tau)
        den = sum(math.exp(float(z[a] @ z[b]) / tau) for b in range(n2) if b != a)
        total += -math.log(num / den)
    return total / n2


def official_form(k: torch.Tensor, q: torch.Tensor, tau: float) -> torch.Tensor:
    """exp / divide as in SEARLE/RTD utils.py (column sums of the symmetric matrix)."""
    v1, v2 = F.normalize(k, dim=1), F.normalize(q, dim=1)
    num = torch.exp(torch.diag(v1 @ v2.T) / tau)
    num = torch.cat([num, num])
    joint = torch.cat([v1, v2])
    pp = torch.exp(joint @ joint.T / tau)
    den = (pp - pp * torch.eye(joint.shape[0], dtype=pp.dtype)).sum(0)
    return -torch.log(num / den).mean()


def test_hand_computed_two_pairs():
    k = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    q = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    # rows: k0 (pos 1, den 1+2e), k1 (pos 0, den 3), q0 (pos 1, den 1+2e), q1 (pos 0, den 1+2e)
    e = math.e
    expected = (3 * math.log(1 + 2 * e) + math.log(3) - 2) / 4
    got = target_anchored_contrastive_loss(k, q, tau=1.0)
    assert got.item() == pytest.approx(expected, abs=1e-6)


def test_single_pair_has_zero_loss():
    k, q = torch.randn(1, 5), torch.randn(1, 5)
    assert target_anchored_contrastive_loss(k, q).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("n,d,tau", [(2, 3, 0.07), (4, 8, 0.07), (6, 4, 0.5)])
def test_matches_loop_and_official_form(n, d, tau):
    g = torch.Generator().manual_seed(n * 100 + d)
    k = torch.randn(n, d, generator=g) * 3
    q = torch.randn(n, d, generator=g) * 0.2
    got = target_anchored_contrastive_loss(k, q, tau).item()
    assert got == pytest.approx(loop_loss(k, q, tau), rel=1e-5, abs=1e-6)
    assert got == pytest.approx(official_form(k.double(), q.double(), tau).item(), rel=1e-5)


def test_anchors_get_no_gradient_and_queries_do():
    k = torch.randn(4, 6, requires_grad=True)
    q = torch.randn(4, 6, requires_grad=True)
    target_anchored_contrastive_loss(k, q).backward()
    assert k.grad is None
    assert q.grad is not None and q.grad.abs().sum() > 0


def test_fp16_inputs_do_not_overflow():
    k = (torch.randn(8, 16) * 100).half()
    q = (torch.randn(8, 16) * 100).half()
    loss = target_anchored_contrastive_loss(k, q, tau=0.01)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    # A naive exp in fp16 would be inf here: 1/0.01 = 100 -> exp(100) overflows fp16.
    assert not torch.isfinite(torch.exp(torch.tensor(100.0, dtype=torch.float16)))


def test_aligned_pairs_beat_shuffled_pairs():
    k = torch.randn(6, 12, generator=torch.Generator().manual_seed(0))
    good = target_anchored_contrastive_loss(k, k + 0.01 * torch.randn(6, 12))
    bad = target_anchored_contrastive_loss(k, k.roll(1, 0))
    assert good < bad


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="anchors and queries"):
        target_anchored_contrastive_loss(torch.randn(3, 4), torch.randn(2, 4))
