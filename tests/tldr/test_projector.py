"""The gap-constrained ridge projector: constraint, equivalent form, gap invariance."""

import pytest
import torch

from tldr_cli.projector import (
    Projector,
    modality_gap,
    ridge_statistics,
    solve_gap_ridge,
    solve_gap_ridge_from_stats,
)


@pytest.fixture
def problem():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(300, 12, generator=gen, dtype=torch.float64) + 0.5
    w_true = torch.randn(12, 20, generator=gen, dtype=torch.float64)
    y = x @ w_true + 0.1 * torch.randn(300, 20, generator=gen, dtype=torch.float64) + 2.0
    gap = torch.randn(12, generator=gen, dtype=torch.float64)
    return x, y, gap


def test_constraint_holds_to_float64_precision(problem):
    x, y, gap = problem
    w, b = solve_gap_ridge(x, y, gap, lam=50.0)
    assert w.dtype == torch.float64 and w.shape == (12, 20) and b.shape == (20,)
    residual = (gap @ w).abs().max() / w.abs().max()
    assert residual < 1e-13


def test_equals_plain_ridge_on_gap_projected_inputs(problem):
    x, y, gap = problem
    lam = 50.0
    w, _ = solve_gap_ridge(x, y, gap, lam=lam)
    u = gap / gap.norm()
    pi = torch.eye(12, dtype=torch.float64) - torch.outer(u, u)
    xtx = x.T @ x
    w_alt = torch.linalg.solve(
        pi @ xtx @ pi + lam * torch.eye(12, dtype=torch.float64), pi @ x.T @ y
    )
    torch.testing.assert_close(w, w_alt, rtol=0, atol=1e-11)


def test_without_gap_is_plain_ridge_and_bias_is_mean_residual(problem):
    x, y, _ = problem
    w, b = solve_gap_ridge(x, y, None, lam=3.0)
    w_ref = torch.linalg.solve(x.T @ x + 3.0 * torch.eye(12, dtype=torch.float64), x.T @ y)
    torch.testing.assert_close(w, w_ref, rtol=0, atol=1e-11)
    torch.testing.assert_close(b, (y - x @ w).mean(0), rtol=0, atol=1e-11)


def test_projection_is_blind_to_the_gap(problem):
    x, y, gap = problem
    w, b = solve_gap_ridge(x, y, gap, lam=50.0)
    t = torch.randn(7, 12, dtype=torch.float64)
    torch.testing.assert_close((t + gap) @ w + b, t @ w + b, rtol=0, atol=1e-12)
    # and through the frozen float32 module (ReLU included): equal up to float32 rounding
    proj = Projector(w, b, relu=True)
    out, out_shift = proj(t.float()), proj((t + 3 * gap).float())
    torch.testing.assert_close(out, out_shift, rtol=1e-4, atol=1e-4)
    assert (out >= 0).all()


def test_chunked_statistics_match_single_pass(problem):
    x, y, gap = problem
    one = solve_gap_ridge_from_stats(ridge_statistics([(x, y)]), gap, 50.0)
    many = solve_gap_ridge(x.float(), y.float(), gap, 50.0, chunk_rows=37)
    torch.testing.assert_close(one[0], many[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(one[1], many[1], rtol=1e-5, atol=1e-5)


def test_modality_gap_is_mean_difference():
    img = torch.tensor([[1.0, 2.0], [3.0, 6.0]])
    txt = torch.tensor([[0.0, 1.0], [1.0, 1.0]])
    torch.testing.assert_close(
        modality_gap(img, txt), torch.tensor([1.5, 3.0], dtype=torch.float64)
    )
    with pytest.raises(ValueError, match="one shape"):
        modality_gap(img, txt[:1])


def test_projector_round_trip(problem):
    x, y, gap = problem
    w, b = solve_gap_ridge(x, y, gap)
    proj = Projector(w, b, relu=False)
    again = Projector.from_tensors(proj.state_tensors(), relu=False)
    t = torch.randn(3, 12)
    torch.testing.assert_close(proj(t), again(t))
    torch.testing.assert_close(proj(t), (t.double() @ w + b).float(), rtol=1e-4, atol=1e-4)
