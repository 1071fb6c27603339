"""DFR^Val_Tr, the group-labelled baseline (Kirichenko et al., ICLR 2023).

Follows `PolinaKirichenko/deep_feature_reweighting:dfr_evaluate_spurious.py` with its
defaults (`balance_dfr_val=True`, `notrain_dfr_val=True`):

- tuning (`dfr_on_validation_tune`, L62-129): shuffle the group-labelled validation
  features and split them in half; group-balance the second half by random downsampling and
  fit a StandardScaler on it; for each C in [1, 0.7, 0.3, 0.1, 0.07, 0.03, 0.01] fit one
  l1 logistic regression (liblinear, class weights 1) and score its worst-group accuracy on
  the first half; keep the best C;
- final model (`dfr_on_validation_eval`, L131-195): fit the scaler on the TRAINING features;
  20 times, group-balance the whole validation set by a fresh random downsample and fit the
  logistic regression; average `coef_` and `intercept_` over the 20 fits.

The scaler is fitted on different data in tuning and in the final fit; that mismatch is the
reference code's and is kept. Randomness comes from one `torch.Generator` (the reference
uses the global numpy state).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from tldr_cli.config import C_GRID  # DFR's grid (dfr_evaluate_spurious.py:L25)
from tldr_cli.sampling import balanced_indices

NUM_RETRAINS = 20  # dfr_on_validation_eval(num_retrains=20)


@dataclass
class LinearModel:
    """A standardised linear classifier: logits = ((x - mean) / scale) @ coef.T + intercept.

    Binary problems follow scikit-learn: coef is (1, D) and the positive score picks class 1.
    """

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray  # (1, D) binary or (C, D) one-vs-rest
    intercept: np.ndarray
    info: dict = field(default_factory=dict)

    def decision(self, x: np.ndarray) -> np.ndarray:
        z = (np.asarray(x, dtype=np.float64) - self.mean) / self.scale
        return z @ self.coef.T + self.intercept

    def predict(self, x: np.ndarray) -> np.ndarray:
        scores = self.decision(x)
        if scores.shape[1] == 1:
            return (scores[:, 0] > 0).astype(np.int64)
        return scores.argmax(1).astype(np.int64)


def _l1_kwargs() -> dict:
    # scikit-learn >= 1.8 deprecates `penalty` in favour of `l1_ratio`; both mean plain l1.
    default = inspect.signature(LogisticRegression).parameters["penalty"].default
    return {"l1_ratio": 1.0} if default == "deprecated" else {"penalty": "l1"}


def _fit_logreg(
    x: np.ndarray, y: np.ndarray, c: float, generator: torch.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """l1 logistic regression with liblinear; returns (coef, intercept) as scikit-learn
    shapes them: (1, D) and (1,) for two classes, (K, D) and (K,) one-vs-rest for K > 2.

    The reference passes class_weight={0: 1, 1: 1} on balanced data: unit weights, which
    is scikit-learn's default. liblinear shuffles with `random_state`; drawing it from our
    generator makes every fit reproducible (the reference uses the global numpy state).
    Deviation: scikit-learn >= 1.8 refuses liblinear on K > 2 classes (it used to fit
    one-vs-rest itself), so the K binary "class k vs rest" fits are made here.
    """
    classes = np.unique(y)
    targets = (
        [y] if classes.size <= 2 else [(y == k).astype(np.int64) for k in range(int(y.max()) + 1)]
    )
    coefs, intercepts = [], []
    for target in targets:
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        model = LogisticRegression(C=c, solver="liblinear", random_state=seed, **_l1_kwargs())
        model.fit(x, target)
        coefs.append(model.coef_)
        intercepts.append(model.intercept_)
    return np.concatenate(coefs), np.concatenate(intercepts)


def _worst_group_acc(pred: np.ndarray, y: np.ndarray, g: np.ndarray) -> float:
    return float(min((pred[g == k] == y[g == k]).mean() for k in np.unique(g)))


def _scaler_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scaler = StandardScaler().fit(x)
    return scaler.mean_.astype(np.float64), scaler.scale_.astype(np.float64)


def tune_c(
    val_x: np.ndarray,
    val_y: np.ndarray,
    val_g: np.ndarray,
    generator: torch.Generator,
    c_grid: tuple[float, ...] = C_GRID,
) -> tuple[float, dict[float, float]]:
    """Pick C on half of the group-labelled validation set (see module docstring).

    Returns:
        (best C, {C: worst-group accuracy on the held-out half}); ties go to the first C
        of the grid, as `np.argmax` does in the reference.
    """
    n = len(val_x)
    if n < 4:
        raise ValueError(f"DFR tuning needs at least 4 validation samples, got {n}")
    idx = torch.randperm(n, generator=generator).numpy()
    half = n // 2
    fit_idx, score_idx = idx[half:], idx[:half]
    fit_idx = fit_idx[balanced_indices(torch.from_numpy(val_g[fit_idx]), generator).numpy()]
    mean, scale = _scaler_stats(val_x[fit_idx])
    x_fit = (val_x[fit_idx] - mean) / scale
    x_score = (val_x[score_idx] - mean) / scale
    scores: dict[float, float] = {}
    for c in c_grid:
        coef, intercept = _fit_logreg(x_fit, val_y[fit_idx], c, generator)
        pred = LinearModel(np.zeros(1), np.ones(1), coef, intercept).predict(x_score)
        scores[c] = _worst_group_acc(pred, val_y[score_idx], val_g[score_idx])
    best = max(c_grid, key=lambda c: (scores[c], -c_grid.index(c)))
    return best, scores


def fit_dfr(
    train_x: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    val_g: np.ndarray,
    c: float,
    generator: torch.Generator,
    num_retrains: int = NUM_RETRAINS,
) -> LinearModel:
    """The final DFR model: scaler on the training features, `num_retrains` fits on fresh
    group-balanced downsamples of the whole validation set, coefficients averaged."""
    if num_retrains < 1:
        raise ValueError(f"num_retrains must be >= 1 (got {num_retrains})")
    mean, scale = _scaler_stats(train_x)
    x_val = (np.asarray(val_x, dtype=np.float64) - mean) / scale
    coefs, intercepts = [], []
    for _ in range(num_retrains):
        idx = balanced_indices(torch.from_numpy(np.asarray(val_g)), generator).numpy()
        coef, intercept = _fit_logreg(x_val[idx], val_y[idx], c, generator)
        coefs.append(coef)
        intercepts.append(intercept)
    return LinearModel(
        mean=mean,
        scale=scale,
        coef=np.mean(coefs, axis=0),
        intercept=np.mean(intercepts, axis=0),
        info={"C": c, "num_retrains": num_retrains},
    )


def run_dfr(
    train_x: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    val_g: np.ndarray,
    generator: torch.Generator,
    c_grid: tuple[float, ...] = C_GRID,
    num_retrains: int = NUM_RETRAINS,
) -> LinearModel:
    """Tune C on half the validation set, then fit the averaged final model."""
    val_y = np.asarray(val_y, dtype=np.int64)
    val_g = np.asarray(val_g, dtype=np.int64)
    best, scores = tune_c(val_x, val_y, val_g, generator, c_grid)
    model = fit_dfr(train_x, val_x, val_y, val_g, best, generator, num_retrains)
    model.info["tuning_worst_group_acc"] = {str(k): v for k, v in scores.items()}
    return model
