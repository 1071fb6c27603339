"""Torch intra-op threads pinned for one block of work.

A CPU fit's weights depend on the number of torch threads: a convolution's weight
gradient and a large tensor sum are reduced in per-thread chunks, so 1 and 2 threads add
the same numbers in a different order (a toy CNN trained 5 steps at 1 and at 2 threads
differs in its bytes; its forward pass, a linear head's training and a float64 X^T X did
not, on this machine). Fits whose figures a demo or gate reports run at a fixed count,
whatever the caller set, so those figures do not move with `torch.set_num_threads` or
OMP_NUM_THREADS. Bit-identity across CPUs (instruction sets, torch builds) is not promised.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

#: Threads of the toy fits (as `labshared.tinyclip.fit.FIT_THREADS`): 2 is what CI and the
#: `make demo` machines have, and what the README's figures were measured at.
TOY_FIT_THREADS = 2


@contextlib.contextmanager
def pinned_threads(n: int = TOY_FIT_THREADS) -> Iterator[None]:
    """Run the block at `n` torch intra-op threads; the caller's count is restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
