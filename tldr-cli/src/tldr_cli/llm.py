"""Chat-completion calls with our own retry policy, and the on-disk reply cache.

Deviation: the official TLDR code has no generation step (its word lists are pasted into
`TLDR:datasets/text_template.py`); this module is ours.

- `ChatClient` wraps `openai.OpenAI` with the client's own retries switched off
  (`max_retries=0`), so `RetryPolicy` alone decides: 408/409/429/5xx, timeouts, dropped
  connections and malformed bodies are retried with exponential backoff (a server's
  `Retry-After` / `retry-after-ms` wins when present); other HTTP errors (bad key,
  unknown model) fail at once with a message naming the fix.
- `ReplyCache` appends one JSON line per completed request to `replies.jsonl` in the run
  folder, flushed and fsynced as it arrives, and mirrors it into a content-keyed store
  under `labshared.cache.cache_root()`; an interrupted run replays it instead of asking
  again. The key hashes model, base URL, messages, call index, temperature and max tokens.

The API key is read from the environment by the caller and handed to the openai client
only; nothing here stores, logs or hashes it.
"""

from __future__ import annotations

import email.utils
import json
import os
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from labshared.cache import cache_key, cache_root
from labshared.console import log
from labshared.errors import ConfigError, LabError
from labshared.runs import atomic_write_json

RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504}) | frozenset(range(520, 530))


class LLMUnavailableError(LabError):
    """The endpoint kept failing after every retry; the run can be resumed later."""


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff: attempt k (0-based) waits `min(max_delay, base_delay * 2**k)`,
    times a jitter factor in [1 - jitter, 1]. A server's Retry-After replaces the computed
    delay, up to `max_retry_after` seconds (longer waits fail rather than hang).

    Attributes:
        max_attempts: requests per call before giving up (1 = no retry).
        base_delay: seconds before the first retry.
        max_delay: cap on one computed backoff delay, seconds.
        max_retry_after: longest server-requested wait we honour, seconds.
        jitter: fraction of the delay drawn at random (0 = deterministic).
    """

    max_attempts: int = 6
    base_delay: float = 1.0
    max_delay: float = 60.0
    max_retry_after: float = 300.0
    jitter: float = 0.25

    def backoff(self, attempt: int, rng: random.Random) -> float:
        delay = min(self.max_delay, self.base_delay * (2.0**attempt))
        return delay * (1.0 - self.jitter * rng.random())


def redact_url(url: str | None) -> str | None:
    """The base URL without user info, query or fragment (they may carry credentials)."""
    if not url:
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def retry_after_seconds(headers: Mapping[str, str] | None) -> float | None:
    """Seconds asked for by `retry-after-ms`, or `Retry-After` (seconds or an HTTP date)."""
    if not headers:
        return None
    lower = {k.lower(): v for k, v in headers.items()}
    if (ms := lower.get("retry-after-ms")) is not None:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = lower.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        when = email.utils.parsedate_to_datetime(value) if value else None
        if when is None:
            return None
        return max(0.0, when.timestamp() - time.time())


@dataclass
class CallStats:
    """Counters for provenance and metrics."""

    requests: int = 0  # HTTP requests sent, retries included
    retries: int = 0
    cached: int = 0  # calls answered from the cache
    completed: int = 0  # calls answered by the server


class ChatClient:
    """One OpenAI-compatible chat-completions endpoint with our retry policy.

    Args:
        model: model name as the server knows it.
        base_url: None for OpenAI, else e.g. http://localhost:8000/v1 (vLLM),
            http://localhost:11434/v1 (Ollama).
        api_key: from the environment; a placeholder for servers that need none.
        timeout: seconds per HTTP request.
        policy: retry policy.
        sleep: called with the seconds to wait (tests pass a recorder).
        seed: seeds the jitter only.
    """

    def __init__(
        self,
        model: str,
        base_url: str | None,
        api_key: str,
        *,
        timeout: float = 120.0,
        policy: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        seed: int = 0,
    ) -> None:
        import openai

        self.model = model
        self.base_url = base_url
        self.policy = policy or RetryPolicy()
        self.sleep = sleep
        self.stats = CallStats()
        self._rng = random.Random(seed)
        self._openai = openai
        self._client = openai.OpenAI(
            api_key=api_key, base_url=base_url, timeout=timeout, max_retries=0
        )

    def complete(
        self, messages: list[dict[str, str]], *, temperature: float, max_tokens: int | None
    ) -> dict[str, Any]:
        """Send one chat request, retrying transient failures.

        Returns:
            {"content": str, "finish_reason": str | None, "usage": dict | None}.

        Raises:
            ConfigError: a non-retryable HTTP error (401, 403, 404, 400, ...).
            LLMUnavailableError: still failing after `policy.max_attempts` requests.
        """
        openai = self._openai
        last = ""
        for attempt in range(self.policy.max_attempts):
            wait: float | None = None
            self.stats.requests += 1
            try:
                kwargs: dict[str, Any] = {
                    "model": self.model,
                    "messages": messages,
                    "temperature": temperature,
                }
                if max_tokens:
                    kwargs["max_tokens"] = max_tokens
                resp = self._client.chat.completions.create(**kwargs)
                reply = _reply_of(resp)
                if reply is not None:
                    self.stats.completed += 1
                    return reply
                last = f"malformed reply body ({type(resp).__name__}: {str(resp)[:80]!r})"
            except openai.APIStatusError as exc:
                status = exc.status_code
                if status not in RETRY_STATUS:
                    raise ConfigError(_explain_status(status, exc, self)) from None
                last = f"HTTP {status}: {_short(exc)}"
                wait = retry_after_seconds(getattr(exc.response, "headers", None))
                if wait is not None and wait > self.policy.max_retry_after:
                    raise LLMUnavailableError(
                        f"{redact_url(self.base_url) or 'OpenAI'} asks to wait {wait:.0f}s "
                        f"(Retry-After) after HTTP {status}, more than the "
                        f"{self.policy.max_retry_after:.0f}s allowed; try again later with "
                        "--resume"
                    ) from None
            except openai.APITimeoutError:
                last = "request timed out"
            except openai.APIConnectionError as exc:
                last = f"connection failed ({_short(exc)})"
            except (ValueError, openai.APIResponseValidationError) as exc:
                # An HTTP 200 whose body is not a chat completion (truncated JSON, HTML).
                last = f"malformed response body ({_short(exc)})"
            if attempt + 1 == self.policy.max_attempts:
                break
            if wait is None:
                wait = self.policy.backoff(attempt, self._rng)
            self.stats.retries += 1
            log(f"[yellow]LLM request failed: {last}; retry {attempt + 1} in {wait:.2f}s[/yellow]")
            self.sleep(wait)
        raise LLMUnavailableError(
            f"{redact_url(self.base_url) or 'OpenAI'}: {self.policy.max_attempts} attempts "
            f"failed, last: {last}. Replies so far are cached; rerun with --resume "
            "(and the same --output-dir) to continue without asking again"
        )


def _short(exc: BaseException) -> str:
    return str(exc).replace("\n", " ")[:200]


def _explain_status(status: int, exc: Exception, client: ChatClient) -> str:
    where = redact_url(client.base_url) or "the OpenAI API"
    if status == 401:
        return (
            f"{where} refused the API key (HTTP 401); set the environment variable named by "
            "--api-key-env (default OPENAI_API_KEY)"
        )
    if status == 404:
        return (
            f"{where} answered HTTP 404 for model {client.model!r}: check --model and "
            f"--base-url (OpenAI-compatible servers end in /v1): {_short(exc)}"
        )
    return f"{where} rejected the request (HTTP {status}): {_short(exc)}"


def _reply_of(resp: Any) -> dict[str, Any] | None:
    """The first choice's text, or None when the body is not a usable chat completion."""
    choices = getattr(resp, "choices", None)
    if not choices:
        return None
    message = getattr(choices[0], "message", None)
    content = getattr(message, "content", None)
    if not isinstance(content, str):
        return None
    usage = getattr(resp, "usage", None)
    return {
        "content": content,
        "finish_reason": getattr(choices[0], "finish_reason", None),
        "usage": usage.model_dump() if hasattr(usage, "model_dump") else None,
    }


def request_key(
    model: str,
    base_url: str | None,
    messages: list[dict[str, str]],
    call_index: int,
    temperature: float,
    max_tokens: int | None,
) -> str:
    """Content key of one request: same inputs, same key; any change, a new key."""
    return cache_key(
        {
            "model": model,
            "base_url": redact_url(base_url),
            "messages": messages,
            "call": call_index,
            "temperature": temperature,
            "max_tokens": max_tokens,
        }
    )


class ReplyCache:
    """Completed replies by request key: `replies.jsonl` in the run folder (the resume
    log), mirrored in `<cache_root>/tldr-llm/<key>.json` unless `shared` is False.

    A torn last line (the process died mid-write) is ignored on load.
    """

    def __init__(self, jsonl_path: str | Path, *, shared: bool = True) -> None:
        self.path = Path(jsonl_path)
        self.shared_dir = cache_root() / "tldr-llm" if shared else None
        self._entries: dict[str, dict[str, Any]] = {}
        if self.path.is_file():
            text = self.path.read_text(encoding="utf-8")
            if text and not text.endswith("\n"):
                # A torn last line: end it so the next append starts a fresh line.
                with self.path.open("a", encoding="utf-8") as fh:
                    fh.write("\n")
            for line in text.splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(entry, dict) and "key" in entry and "content" in entry:
                    self._entries[entry["key"]] = entry

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> dict[str, Any] | None:
        if key in self._entries:
            return self._entries[key]
        if self.shared_dir is not None:
            path = self.shared_dir / f"{key}.json"
            if path.is_file():
                try:
                    entry = json.loads(path.read_text(encoding="utf-8"))
                except (json.JSONDecodeError, OSError):
                    return None
                log(f"[dim]cache hit: {path}[/dim]")
                self._append(entry)
                return entry
        return None

    def put(self, key: str, entry: Mapping[str, Any]) -> dict[str, Any]:
        record = {"key": key, **entry}
        self._append(record)
        if self.shared_dir is not None:
            atomic_write_json(self.shared_dir / f"{key}.json", record)
        return record

    def _append(self, record: dict[str, Any]) -> None:
        self._entries[record["key"]] = record
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
