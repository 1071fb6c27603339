"""DFR^Val_Tr on synthetic features with a planted spurious direction."""

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from tldr_cli.dfr import C_GRID, fit_dfr, run_dfr, tune_c
from tldr_cli.metrics import evaluate_predictions, group_counts


def make_split(rng, counts, d=16):
    """Groups (y, a) with the given sizes: a weak noisy core direction (dim 0) carries y,
    a strong clean spurious direction (dim 1) carries a; the rest is noise."""
    xs, ys, as_ = [], [], []
    for (y, a), n in counts.items():
        x = rng.normal(size=(n, d))
        x[:, 0] = (2 * y - 1) * 1.0 + rng.normal(scale=1.0, size=n)
        x[:, 1] = (2 * a - 1) * 3.0 + rng.normal(scale=0.3, size=n)
        xs.append(x)
        ys.append(np.full(n, y))
        as_.append(np.full(n, a))
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(as_)


@pytest.fixture(scope="module")
def world():
    rng = np.random.default_rng(0)
    train = make_split(rng, {(0, 0): 950, (0, 1): 50, (1, 0): 50, (1, 1): 950})
    val = make_split(rng, {(0, 0): 200, (0, 1): 40, (1, 0): 40, (1, 1): 200})
    test = make_split(rng, {(0, 0): 300, (0, 1): 300, (1, 0): 300, (1, 1): 300})
    return train, val, test


def test_dfr_beats_erm_worst_group(world):
    (tx, ty, ta), (vx, vy, va), (sx, sy, sa) = world
    train_counts = group_counts(ty, ta, 2, 2)
    erm = LogisticRegression(C=100.0, max_iter=2000).fit(tx, ty)
    erm_m = evaluate_predictions(erm.predict(sx), sy, sa, 2, 2, train_counts)

    dfr = run_dfr(tx, vx, vy, vy * 2 + va, torch.Generator().manual_seed(0))
    dfr_m = evaluate_predictions(dfr.predict(sx), sy, sa, 2, 2, train_counts)
    assert erm_m["worst_group_acc"] < 0.5
    assert dfr_m["worst_group_acc"] > 0.7
    assert dfr_m["worst_group_acc"] > erm_m["worst_group_acc"] + 0.25
    assert dfr.info["C"] in C_GRID and dfr.info["num_retrains"] == 20
    # the l1 model leans on the core direction, not the spurious one
    assert abs(dfr.coef[0, 0]) > abs(dfr.coef[0, 1])


def test_final_model_is_the_average_of_the_retrains(world):
    (tx, _, _), (vx, vy, va), _ = world
    g = vy * 2 + va
    one = fit_dfr(tx, vx, vy, g, 0.3, torch.Generator().manual_seed(1), num_retrains=1)
    gen = torch.Generator().manual_seed(1)
    a = fit_dfr(tx, vx, vy, g, 0.3, gen, num_retrains=1)
    b = fit_dfr(tx, vx, vy, g, 0.3, gen, num_retrains=1)
    both = fit_dfr(tx, vx, vy, g, 0.3, torch.Generator().manual_seed(1), num_retrains=2)
    np.testing.assert_allclose(one.coef, a.coef)
    np.testing.assert_allclose(both.coef, (a.coef + b.coef) / 2, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(
        both.intercept, (a.intercept + b.intercept) / 2, rtol=1e-6, atol=1e-8
    )
    # the scaler is fitted on the training features
    np.testing.assert_allclose(both.mean, tx.mean(0))


def test_tuning_scores_every_c_and_is_reproducible(world):
    _, (vx, vy, va), _ = world
    g = vy * 2 + va
    best, scores = tune_c(vx, vy, g, torch.Generator().manual_seed(3))
    best2, scores2 = tune_c(vx, vy, g, torch.Generator().manual_seed(3))
    assert set(scores) == set(C_GRID) and best == best2 and scores == scores2
    assert scores[best] == max(scores.values())
    assert all(0.0 <= v <= 1.0 for v in scores.values())


def test_multiclass_groups_like_spuco_animals():
    # 4 classes, 4 spurious values, only 8 groups populated (birds x land/water, dogs x in/out)
    rng = np.random.default_rng(1)
    x, y, g = [], [], []
    for cls in range(4):
        for a in (0, 1) if cls < 2 else (2, 3):
            n = 30
            feats = rng.normal(size=(n, 8))
            feats[:, cls] += 4.0
            x.append(feats)
            y.append(np.full(n, cls))
            g.append(np.full(n, cls * 4 + a))
    x, y, g = np.concatenate(x), np.concatenate(y), np.concatenate(g)
    model = run_dfr(x, x, y, g, torch.Generator().manual_seed(0), num_retrains=2)
    assert model.coef.shape == (4, 8)
    assert (model.predict(x) == y).mean() > 0.95
