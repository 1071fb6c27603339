"""Chat-completion calls through the openai client's own retries, and the reply cache.

Deviation: the official TLDR code has no generation step (its word lists are pasted into
`TLDR:datasets/text_template.py`); this module is ours.

Retries and timeouts are the openai client's: `OpenAI(max_retries=..., timeout=...)`, set
by `--max-retries` and `--timeout`. What it does, as read in `openai/_base_client.py`
(openai 3.57: `SyncAPIClient.request`, `_should_retry`, `_calculate_retry_timeout`,
`_parse_retry_after_header`; constants in `openai/_constants.py`):

- it retries, up to `max_retries` times per request, on HTTP 408, 409, 429 and every 5xx
  (a server's `x-should-retry: true|false` header overrides the status), on timeouts and
  on connection errors (a dropped connection); any other status (400, 401, 403, 404, 422)
  is raised at once;
- it waits the server's `retry-after-ms`, else `Retry-After` (seconds or an HTTP date),
  when that lies in (0, 120] s (`MAX_RETRY_AFTER_DELAY`); a response asking for more than
  120 s is not retried at all; otherwise it backs off 0.5 s x 2^k for the k-th retry,
  at most 8 s (`INITIAL_RETRY_DELAY`, `MAX_RETRY_DELAY`), minus a random 0-25 % jitter;
- every attempt of one request carries the same idempotency key.

What this module adds around it:

- `ChatClient` gives the client an httpx response hook that turns an HTTP 200 whose body
  is not a chat completion (a truncated JSON body, a proxy's HTML page, no message text)
  into a transport error, which the client then retries like a dropped connection, on
  the same budget and backoff (the client itself would return such a body unretried);
- errors become ours: a status the client does not retry is a `ConfigError` naming the
  fix (401: the key; 404: the model or base URL); failing after every retry, or a server
  asking to wait longer than the client waits, is `LLMUnavailableError` ("--resume");
- counters for provenance: HTTP requests sent, retries, answers.
- `ReplyCache` appends one JSON line per completed request to `replies.jsonl` in the run
  folder, flushed and fsynced as it arrives, and mirrors it into a content-keyed store
  under `labshared.cache.cache_root()`; an interrupted run replays it instead of asking
  again. The key hashes model, base URL, messages, call index, temperature and max tokens.

The API key is read from the environment by the caller and handed to the openai client
only; nothing here stores, logs or hashes it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx2
import openai

from labshared.cache import cache_key, cache_root
from labshared.console import log
from labshared.errors import ConfigError, LabError
from labshared.runs import atomic_write_json

#: Statuses the openai client retries (`_should_retry`): a failure of these after every
#: retry is the endpoint's trouble (try again later with --resume), not a bad request.
TRANSIENT_STATUS = frozenset({408, 409, 429})


class LLMUnavailableError(LabError):
    """The endpoint kept failing after every retry; the run can be resumed later."""


def redact_url(url: str | None) -> str | None:
    """The base URL without user info, query or fragment (they may carry credentials)."""
    if not url:
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


@dataclass
class CallStats:
    """Counters for provenance and metrics."""

    requests: int = 0  # HTTP requests sent, retries included
    retries: int = 0
    cached: int = 0  # calls answered from the cache
    completed: int = 0  # calls answered by the server


class ChatClient:
    """One OpenAI-compatible chat-completions endpoint, retried by the openai client.

    Args:
        model: model name as the server knows it.
        base_url: None for OpenAI, else e.g. http://localhost:8000/v1 (vLLM),
            http://localhost:11434/v1 (Ollama).
        api_key: from the environment; a placeholder for servers that need none.
        timeout: seconds per HTTP request (the client's `timeout`).
        max_retries: retries per request (the client's `max_retries`; 0: one attempt).
    """

    def __init__(
        self,
        model: str,
        base_url: str | None,
        api_key: str,
        *,
        timeout: float = 120.0,
        max_retries: int = 5,
    ) -> None:
        self.model = model
        self.base_url = base_url
        self.max_retries = max_retries
        self.stats = CallStats()
        self._sent = 0  # requests sent for the call in progress
        self._problem = ""  # what went wrong with the last request, for the retry log
        http = openai.DefaultHttpxClient(
            event_hooks={"request": [self._on_request], "response": [self._on_response]}
        )
        self._client = openai.OpenAI(
            api_key=api_key,
            base_url=base_url,
            timeout=timeout,
            max_retries=max_retries,
            http_client=http,
        )

    def complete(
        self, messages: list[dict[str, str]], *, temperature: float, max_tokens: int | None
    ) -> dict[str, Any]:
        """Send one chat request (the client retries transient failures).

        Returns:
            {"content": str, "finish_reason": str | None, "usage": dict | None}.

        Raises:
            ConfigError: a request the server refuses (401, 403, 404, 400, ...).
            LLMUnavailableError: still failing after `max_retries` retries.
        """
        extra = {"max_tokens": max_tokens} if max_tokens else {}
        self._sent = 0
        try:
            resp = self._client.chat.completions.create(
                model=self.model, messages=messages, temperature=temperature, **extra
            )
        except openai.APIStatusError as exc:
            raise self._status_error(exc) from None
        except openai.APIConnectionError as exc:
            raise self._unavailable(_describe_connection_error(exc)) from None
        finally:
            self.stats.retries += max(self._sent - 1, 0)
        self.stats.completed += 1
        choice = resp.choices[0]  # a message with text: `_on_response` let nothing else by
        usage = getattr(resp, "usage", None)  # servers may leave out the optional fields
        return {
            "content": choice.message.content,
            "finish_reason": getattr(choice, "finish_reason", None),
            "usage": usage.model_dump() if usage is not None else None,
        }

    # --------------------------------------------------------------------- httpx hooks
    def _on_request(self, request: httpx2.Request) -> None:
        self.stats.requests += 1
        self._sent += 1
        if self._sent > 1:
            problem = self._problem or "no answer: timeout or dropped connection"
            retry = f"retry {self._sent - 1} of {self.max_retries}"
            log(f"[yellow]LLM request failed ({problem}); {retry}[/yellow]")
        self._problem = ""

    def _on_response(self, response: httpx2.Response) -> None:
        """Reject a 2xx body that is not a chat completion with a transport error, which
        the openai client retries as it retries a dropped connection."""
        if response.status_code >= 300:
            self._problem = f"HTTP {response.status_code}"
            return
        response.read()
        problem = _chat_body_problem(response.content)
        if problem is not None:
            self._problem = f"unreadable body: {problem}"
            raise httpx2.DecodingError(self._problem, request=response.request)

    # --------------------------------------------------------------------- errors
    def _where(self) -> str:
        return redact_url(self.base_url) or "the OpenAI API"

    def _unavailable(self, last: str) -> LLMUnavailableError:
        return LLMUnavailableError(
            f"{self._where()}: {self._sent} attempts failed, last: {last}. Replies so far are "
            "cached; rerun with --resume (and the same --output-dir) to continue without "
            "asking again"
        )

    def _status_error(self, exc: openai.APIStatusError) -> LabError:
        status = exc.status_code
        if status in TRANSIENT_STATUS or status >= 500:
            wait = exc.response.headers.get("retry-after-ms") or exc.response.headers.get(
                "retry-after"
            )
            if self._sent <= self.max_retries and wait is not None:
                return LLMUnavailableError(
                    f"{self._where()} answered HTTP {status} and asks to wait {wait!r} "
                    "(Retry-After), longer than the openai client waits (120 s); try again "
                    "later with --resume"
                )
            return self._unavailable(f"HTTP {status}: {_short(exc)}")
        if status == 401:
            return ConfigError(
                f"{self._where()} refused the API key (HTTP 401); set the environment variable "
                "named by --key-env-var (default OPENAI_API_KEY)"
            )
        if status == 404:
            return ConfigError(
                f"{self._where()} answered HTTP 404 for model {self.model!r}: check --model and "
                f"--base-url (OpenAI-compatible servers end in /v1): {_short(exc)}"
            )
        return ConfigError(f"{self._where()} rejected the request (HTTP {status}): {_short(exc)}")


def _describe_connection_error(exc: openai.APIConnectionError) -> str:
    if isinstance(exc, openai.APITimeoutError):
        return "request timed out"
    cause = exc.__cause__
    return _short(cause) if cause is not None else f"connection failed ({_short(exc)})"


def _short(exc: BaseException) -> str:
    return str(exc).replace("\n", " ")[:200]


def _chat_body_problem(body: bytes) -> str | None:
    """Why a 2xx body is not a chat completion with message text, or None if it is."""
    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return f"not JSON ({body[:60]!r})"
    choices = obj.get("choices") if isinstance(obj, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return "no choices"
    message = choices[0].get("message")
    if not isinstance(message, dict) or not isinstance(message.get("content"), str):
        return "no message text"
    return None


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
