"""Test-wide settings: offline, CPU, and one shared cache for the fitted tiny CLIP.

The cache lives in the checkout (`.cache/labshared`, git-ignored) unless LABSHARED_CACHE
is set, so the tiny CLIP is fitted once per clone and both pytest-xdist workers share it.
"""

import os
import socket
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("LABSHARED_NO_PROGRESS", "1")
# The suite needs fitted tiny-CLIP weights of the right shape, not their quality: the quick
# fit profile (seconds) keeps `make test` from paying for the full fit, which the effect
# gates (tests/effects, their own fixture) and `make demo` use.
os.environ.setdefault("LABSHARED_TINY_CLIP_FIT", "quick")
os.environ.setdefault(
    "LABSHARED_CACHE", str(Path(__file__).resolve().parents[1] / ".cache" / "labshared")
)
# Never let a test reach a real LLM endpoint with a real key.
os.environ.pop("OPENAI_API_KEY", None)


@pytest.fixture
def free_port() -> int:
    """A TCP port free on 127.0.0.1 now, for a test's gloo rendezvous. Tests pass
    --master_addr 127.0.0.1 with it: a fixed port collides between xdist workers, and the
    default address (the host name) need not resolve to a usable interface in CI."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
