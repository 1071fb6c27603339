"""Grow one word list over several chat calls (`tldr generate`, see `tldr_cli.generate`).

Each request asks for `per_call` words and lists the words so far as "do not repeat"; the
reply's new words (de-duplicated case-insensitively) are added until the list holds
`target` words, `calls_limit` calls were made, or `patience` calls in a row added nothing
(or could not be read; an unreadable reply is re-asked with a reminder). Every reply is
cached before its words are used, so a killed run resumes without repeating a request.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from labshared.console import log
from tldr_cli.config import GenerateConfig
from tldr_cli.llm import ChatClient, ReplyCache, request_key
from tldr_cli.prompts import PromptSet, build_messages, parse_word_reply
from tldr_cli.wordlists import dedupe_words


@dataclass
class ListResult:
    """One generated list and how it was obtained."""

    words: list[str]
    calls: int = 0
    cached_calls: int = 0
    unreadable_replies: int = 0
    stop_reason: str = ""
    keys: list[str] = field(default_factory=list)


def generate_list(
    client: ChatClient,
    cache: ReplyCache,
    cfg: GenerateConfig,
    prompts: PromptSet,
    *,
    dataset: str,
    kind: str,
    name: str,
    description: str,
    on_prompt: Callable[[list[dict[str, str]]], None] | None = None,
) -> ListResult:
    """Grow one list to `cfg.target` words over several requests (see the module docstring).

    Every reply is stored in `cache` before its words are used; a cached reply is reused
    instead of a request, so replaying a run reproduces the same prompts and keys.
    """
    result = ListResult(words=[])
    reask = False
    no_new = 0
    unreadable_in_row = 0
    while len(result.words) < cfg.target:
        if result.calls >= cfg.calls_limit:
            result.stop_reason = f"call limit ({cfg.calls_limit}) reached"
            break
        n = min(cfg.per_call, cfg.target - len(result.words))
        messages = build_messages(
            prompts,
            dataset=dataset,
            kind=kind,
            name=name,
            description=description,
            n=n,
            so_far=result.words,
            reminder=reask,
        )
        key = request_key(
            cfg.model or "", cfg.base_url, messages, result.calls, cfg.temperature, cfg.max_tokens
        )
        result.keys.append(key)
        entry = cache.get(key)
        if entry is None:
            if on_prompt is not None:
                on_prompt(messages)
            reply = client.complete(
                messages, temperature=cfg.temperature, max_tokens=cfg.max_tokens
            )
            entry = cache.put(
                key,
                {
                    "list": f"{kind}.{name}",
                    "call": result.calls,
                    "model": cfg.model,
                    "messages": messages,
                    "received_at": now(),
                    **reply,
                },
            )
        else:
            result.cached_calls += 1
            client.stats.cached += 1
        result.calls += 1
        words = parse_word_reply(entry["content"])
        if words is None:
            result.unreadable_replies += 1
            unreadable_in_row += 1
            log(
                f"[yellow]{kind}.{name}: call {result.calls} reply unreadable; "
                "asking again[/yellow]"
            )
            reask = True
            if unreadable_in_row >= cfg.patience:
                result.stop_reason = f"{cfg.patience} unreadable replies in a row"
                break
            continue
        reask = False
        unreadable_in_row = 0
        new = dedupe_words(words, seen=result.words)[: cfg.target - len(result.words)]
        result.words += new
        no_new = 0 if new else no_new + 1
        if no_new >= cfg.patience:
            result.stop_reason = f"{cfg.patience} calls in a row added no new word"
            break
    if not result.stop_reason:
        result.stop_reason = "target reached"
    return result


def now() -> str:
    """UTC time as recorded in the reply log and provenance."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
