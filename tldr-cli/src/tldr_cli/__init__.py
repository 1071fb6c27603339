"""TLDR: text-based last-layer retraining for debiasing image classifiers
(Park et al., WACV 2025)."""

__version__ = "0.1.0"
