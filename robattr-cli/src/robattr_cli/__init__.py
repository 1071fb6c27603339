"""Robust feature attribution by local gradient alignment (Joo et al., AAAI 2023)."""

__version__ = "0.1.0"
