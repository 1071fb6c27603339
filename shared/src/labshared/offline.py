"""Whether a download can start at all, answered in seconds.

Without network, the Hugging Face client and urllib retry a connection for up to a minute
before failing with a long message. A command that needs weights it does not have asks
`download_blocked(url)` first and, when the answer is not None, fails at once with one
line naming the missing file and where to get it (`labshared.clip`, tldr's ResNet-50).
"""

from __future__ import annotations

import os
import socket
import threading
from urllib.parse import urlsplit

from huggingface_hub import constants

PROBE_SECONDS = 4.0  # DNS + TCP connect; a reachable host answers in well under a second


def hub_offline() -> bool:
    """`HF_HUB_OFFLINE` (or `TRANSFORMERS_OFFLINE`) is set, as huggingface_hub reads it."""
    return bool(constants.HF_HUB_OFFLINE)


def hub_endpoint() -> str:
    """The Hugging Face endpoint downloads go to (`HF_ENDPOINT`, default huggingface.co)."""
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co")


def download_blocked(url: str, *, hub: bool = False) -> str | None:
    """Why a download from `url` cannot start now, or None when it can.

    Args:
        url: the file's URL (or the hub endpoint for a Hugging Face file).
        hub: the file comes from the Hugging Face hub (so `HF_HUB_OFFLINE` applies).
    """
    if hub and hub_offline():
        return "HF_HUB_OFFLINE is set"
    proxy = _proxy_for(url)
    target = urlsplit(proxy or url)
    host = target.hostname or ""
    port = target.port or (443 if target.scheme == "https" else 80)
    if not host:
        return None
    if _reachable(host, port):
        return None
    via = f" (through the proxy {host}:{port})" if proxy else ""
    return f"{urlsplit(url).hostname} cannot be reached{via}"


def _proxy_for(url: str) -> str | None:
    scheme = urlsplit(url).scheme
    names = ("HTTPS_PROXY", "https_proxy") if scheme == "https" else ("HTTP_PROXY", "http_proxy")
    return next((os.environ[n] for n in names if os.environ.get(n)), None)


def _reachable(host: str, port: int) -> bool:
    """A TCP connection opens within PROBE_SECONDS (name resolution has no timeout of
    its own, so the probe runs in a thread that is abandoned when it takes too long)."""
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=PROBE_SECONDS):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(PROBE_SECONDS + 0.5)
    return bool(result and result[0])
