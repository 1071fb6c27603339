"""The LLM prompts of `tldr generate`, their override file, and reading words from replies.

Deviation: the paper's generation prompt was not released (the official lists are pasted
into `TLDR:datasets/text_template.py`), so these prompts are ours. They are printed by
`--show-prompts` / `--dry-run` and can be replaced with `--prompts FILE` (JSON or TOML)::

    system = "..."                     # system message
    first = "List {n} different {description}. ..."     # first call of a list
    more = "List {n} more ... Do not repeat: {exclude}"  # later calls
    reminder = "Answer with a JSON array of strings only."  # appended after a bad reply
    [descriptions]                     # per-list override of the preset's description
    landbird = "songbird species"

Placeholders: {n} words wanted in this call, {description}, {name} (list name), {kind}
("class" or "spurious value"), {dataset}; `more` also gets {exclude} (the words so far as a
JSON array).
"""

from __future__ import annotations

import ast
import json
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from labshared.errors import ConfigError

SYSTEM = (
    "You write word lists for building image-classification datasets. "
    "You always answer with a JSON array of strings and nothing else."
)
FIRST = (
    "List {n} different {description}.\n"
    "Each item is a short name or phrase of at most five words; no numbering, no "
    "explanations, no duplicates.\n"
    "Answer with a JSON array of {n} strings only."
)
MORE = (
    "List {n} more different {description}.\n"
    "Do not repeat any of these: {exclude}\n"
    "Each item is a short name or phrase of at most five words; no numbering, no "
    "explanations, no duplicates.\n"
    "Answer with a JSON array of {n} strings only."
)
REMINDER = (
    "Your previous answer could not be read. Answer with a JSON array of strings only, "
    'for example ["first item", "second item"].'
)

_ALLOWED = {
    "system": {"dataset"},
    "first": {"n", "description", "name", "kind", "dataset"},
    "more": {"n", "description", "name", "kind", "dataset", "exclude"},
    "reminder": set(),
}
MAX_WORDS_PER_ITEM = 8
MAX_CHARS_PER_ITEM = 80


@dataclass(frozen=True)
class PromptSet:
    """The prompt templates; `descriptions` overrides the preset's per-list descriptions."""

    system: str = SYSTEM
    first: str = FIRST
    more: str = MORE
    reminder: str = REMINDER
    descriptions: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, allowed in _ALLOWED.items():
            check_template(getattr(self, name), allowed, f"prompts.{name}")

    def as_dict(self) -> dict[str, Any]:
        return {
            "system": self.system,
            "first": self.first,
            "more": self.more,
            "reminder": self.reminder,
            "descriptions": dict(self.descriptions),
        }


def check_template(template: str, allowed: set[str], where: str) -> None:
    """Raise ConfigError if `template` is not a string or uses an unknown {placeholder}."""
    if not isinstance(template, str) or not template.strip():
        raise ConfigError(f"{where} must be a non-empty string")
    try:
        names = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as exc:
        raise ConfigError(
            f"{where}: bad braces in template ({exc}); write {{{{ for a literal brace"
        ) from None
    unknown = names - allowed
    if unknown:
        raise ConfigError(
            f"{where} uses unknown placeholder(s) {sorted(unknown)}; allowed: {sorted(allowed)}"
        )


def load_prompts(path: str | Path | None) -> PromptSet:
    """The default prompts, with the fields given in a JSON or TOML file replaced.

    Raises:
        ConfigError: unreadable file, unknown key, or a template with unknown placeholders.
    """
    if path is None:
        return PromptSet()
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--prompts {path}: file not found")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".toml":
            # Imported here: tomllib is in the standard library from Python 3.11 only, and
            # only a TOML prompt file needs it (JSON works on 3.10 too).
            import tomllib

            obj = tomllib.loads(text)
        else:
            obj = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--prompts {path}: cannot parse ({exc})") from None
    if not isinstance(obj, Mapping):
        raise ConfigError(f"--prompts {path}: expected a table/object of prompt fields")
    known = set(_ALLOWED) | {"descriptions"}
    unknown = set(obj) - known
    if unknown:
        raise ConfigError(
            f"--prompts {path}: unknown field(s) {sorted(unknown)}; known: {sorted(known)}"
        )
    descriptions = obj.get("descriptions", {})
    if not isinstance(descriptions, Mapping) or not all(
        isinstance(v, str) and v.strip() for v in descriptions.values()
    ):
        raise ConfigError(f"--prompts {path}: 'descriptions' must map list names to strings")
    try:
        return replace(
            PromptSet(),
            **{k: v for k, v in obj.items() if k != "descriptions"},
            descriptions=dict(descriptions),
        )
    except ConfigError as exc:
        raise ConfigError(f"--prompts {path}: {exc}") from None


def build_messages(
    prompts: PromptSet,
    *,
    dataset: str,
    kind: str,
    name: str,
    description: str,
    n: int,
    so_far: list[str],
    reminder: bool = False,
) -> list[dict[str, str]]:
    """The chat messages of one request: the first-call prompt while `so_far` is empty,
    the `more` prompt after; `reminder` appends the re-ask note after a bad reply."""
    values = {
        "n": n,
        "description": prompts.descriptions.get(name, description),
        "name": name,
        "kind": "class" if kind == "classes" else "spurious value",
        "dataset": dataset,
        "exclude": json.dumps(so_far, ensure_ascii=False),
    }
    user = (prompts.more if so_far else prompts.first).format(**values)
    if reminder:
        user = f"{user}\n{prompts.reminder}"
    return [
        {"role": "system", "content": prompts.system.format(dataset=dataset)},
        {"role": "user", "content": user},
    ]


# --------------------------------------------------------------------------- reading replies
_FENCE = re.compile(r"```[a-zA-Z0-9_-]*\s*\n?(.*?)```", re.DOTALL)
_BULLET = re.compile(r"^\s*(?:[-*\u2022+]|\(?\d{1,4}[.):]|\(?[a-zA-Z][.)])\s+")
_QUOTED = re.compile(r'"((?:[^"\\\n]|\\.)*)"')
_TRAILING_COMMA = re.compile(r",\s*([\]}])")
_SMART = str.maketrans({"\u201c": '"', "\u201d": '"', "\u2018": "'", "\u2019": "'"})


def clean_item(item: str) -> str | None:
    """One candidate word: bullets, quotes and trailing punctuation stripped; None if it
    looks like prose (more than 8 words or 80 characters) or is empty."""
    s = _BULLET.sub("", item.strip())
    s = s.strip().strip("\"'`").strip().rstrip(",;.").strip().strip("\"'`").strip()
    if not s or "\n" in s or len(s) > MAX_CHARS_PER_ITEM or len(s.split()) > MAX_WORDS_PER_ITEM:
        return None
    return s


def _from_json(obj: Any) -> list[str] | None:
    if isinstance(obj, Mapping):
        lists = [v for v in obj.values() if isinstance(v, list)]
        return _from_json(lists[0]) if len(lists) == 1 else None
    if not isinstance(obj, list):
        return None
    out = []
    for item in obj:
        if isinstance(item, Mapping):  # [{"name": ...}] or [{"word": ...}]
            item = next((item[k] for k in ("word", "name", "phrase", "item") if k in item), None)
        if isinstance(item, str) and (word := clean_item(item)):
            out.append(word)
    return out


def _loads_lenient(text: str) -> Any:
    """json.loads, then with trailing commas removed, then as a Python literal."""
    text = text.strip().translate(_SMART)
    for candidate in (text, _TRAILING_COMMA.sub(r"\1", text)):
        try:
            return json.loads(candidate)
        except json.JSONDecodeError:
            pass
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None


def _from_lines(text: str) -> list[str] | None:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    bulleted = [ln for ln in lines if _BULLET.match(ln)]
    if len(bulleted) >= 2:
        chosen = bulleted
    elif len(lines) == 1 and lines[0].count(",") >= 2:  # "a, b, c"
        chosen = lines[0].split(",")
    elif len(lines) >= 3 and not any(ln.rstrip().endswith(":") for ln in lines):
        chosen = lines
    else:
        return None
    words = [w for ln in chosen if (w := clean_item(ln))]
    return words or None


def _unescape(quoted: str) -> str:
    try:
        return json.loads(f'"{quoted}"')
    except json.JSONDecodeError:
        return quoted


def parse_word_reply(text: str) -> list[str] | None:
    """Words from an LLM reply, or None when nothing list-like can be read from it.

    Tried in order: the whole reply as JSON (an array, or an object holding one array);
    each markdown code fence; the span from the first '[' to the last ']' (with trailing
    commas and smart quotes repaired, or as a Python literal); the complete quoted
    strings after an unclosed '[' (a reply cut off by the token limit); bulleted or
    numbered lines, one comma-separated line, or plain lines.
    """
    if not isinstance(text, str) or not text.strip():
        return None
    candidates = [text] + _FENCE.findall(text)
    start, end = text.find("["), text.rfind("]")
    if start != -1 and end > start:
        candidates.append(text[start : end + 1])
    for cand in candidates:
        words = _from_json(_loads_lenient(cand))
        if words:
            return words
    if start != -1:
        quoted = [w for q in _QUOTED.findall(text[start:]) if (w := clean_item(_unescape(q)))]
        if quoted:
            return quoted
    for cand in _FENCE.findall(text) or [text]:
        words = _from_lines(cand)
        if words:
            return words
    return None
