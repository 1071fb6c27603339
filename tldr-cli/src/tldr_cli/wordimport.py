"""`tldr generate --from-file`: read hand-made or published word lists.

Accepted sources (each `--from-file` value is `[LIST=]PATH`; several may be given and
their lists are merged, de-duplicated case-insensitively):

- a word-list JSON in our schema (`tldr_cli.wordlists`);
- a JSON object with `classes` (or the official name `target`) and/or `spurious`, each
  mapping list names or indices ("0", "1", ...: the official `text_template.py` keys)
  to lists of words; anchors then come from `--preset`;
- a flat JSON object `{list name: [words]}`;
- a text file with one word per line (`#` starts a comment), for the list named by
  `LIST=` or by the file's stem (`small_dog.txt` -> "small dog");
- `builtin:toy`, the shipped toy lists (`resources/toy_words.json`).

A list name is a class or spurious value of the preset ("landbird"), or qualified
("classes.landbird", "spurious.land") where a name is both.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from labshared.errors import ConfigError, DataLayoutError
from tldr_cli.presets import DatasetPreset
from tldr_cli.wordlists import FORMAT, WordLists, dedupe_words, validate_wordlists

BUILTIN = {"toy": "toy_words.json"}
TEXT_LAYOUT = """\
one word or phrase per line (UTF-8); blank lines and lines starting with '#' are skipped;
the list is named by LIST=PATH or by the file name (small_dog.txt -> "small dog")"""


@dataclass
class ImportedLists:
    """Words read from files, keyed (kind, list name); kind is "classes" or "spurious"."""

    words: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    sources: list[dict[str, Any]] = field(default_factory=list)
    full: WordLists | None = None  # the last full-schema file read, if any

    def add(self, kind: str, name: str, words: list[str]) -> int:
        key = (kind, name)
        before = self.words.get(key, [])
        self.words[key] = before + dedupe_words(words, seen=before)
        return len(self.words[key]) - len(before)


def builtin_path(name: str) -> Path:
    """Path of a shipped word-list file (`builtin:toy`)."""
    if name not in BUILTIN:
        raise ConfigError(f"--from-file builtin:{name} is unknown; known: {', '.join(BUILTIN)}")
    return Path(str(resources.files("tldr_cli") / "resources" / BUILTIN[name]))


def _resolve_name(name: str, preset: DatasetPreset | None, source: str) -> tuple[str, str]:
    """(kind, list name) for a user-given list name."""
    if preset is None:
        raise ConfigError(
            f"--from-file {source}: list {name!r} needs --preset to say which "
            "class or spurious value it is"
        )
    wanted = name.strip().lower().replace("_", " ")
    kind_hint = None
    for prefix, kind in (("classes.", "classes"), ("class.", "classes"), ("spurious.", "spurious")):
        if wanted.startswith(prefix):
            kind_hint, wanted = kind, wanted[len(prefix) :]
    hits = [
        (kind, spec.name)
        for kind, spec in preset.lists
        if spec.name.lower() == wanted and kind_hint in (None, kind)
    ]
    if len(hits) == 1:
        return hits[0]
    known = ", ".join(f"{k}.{s.name}" for k, s in preset.lists)
    if len(hits) > 1:
        raise ConfigError(f"--from-file {source}: list {name!r} is ambiguous; write one of {known}")
    raise ConfigError(
        f"--from-file {source}: no list {name!r} in preset '{preset.name}'; known: {known}"
    )


def _by_index_or_name(
    obj: Any, kind: str, preset: DatasetPreset | None, source: str, path: Path
) -> dict[str, list]:
    if not isinstance(obj, Mapping):
        raise DataLayoutError(path, f"field '{kind}' must map list names to lists of words")
    specs = [] if preset is None else (preset.classes if kind == "classes" else preset.spurious)
    out = {}
    for key, words in obj.items():
        if not isinstance(words, list):
            raise DataLayoutError(path, f"field '{kind}.{key}' must be a list of words")
        if str(key).isdigit() and preset is not None:
            i = int(key)
            if i >= len(specs):
                raise DataLayoutError(
                    path,
                    f"field '{kind}.{key}': index beyond the "
                    f"{len(specs)} {kind} of preset '{preset.name}'",
                )
            out[specs[i].name] = words
        else:
            out[_resolve_name(f"{kind}.{key}", preset, source)[1]] = words
    return out


def _strings(words: list, path: Path, where: str) -> list[str]:
    bad = [w for w in words if not isinstance(w, str)]
    if bad:
        raise DataLayoutError(path, f"field '{where}' holds non-strings, e.g. {bad[0]!r}")
    return words


def _read_text(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise DataLayoutError(path, f"not UTF-8 text ({exc})", TEXT_LAYOUT) from None
    return [ln for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


def import_lists(specs: list[str], preset: DatasetPreset | None) -> ImportedLists:
    """Read every `[LIST=]PATH` in `specs` (see the module docstring).

    Raises:
        ConfigError: unknown list name, missing file, a name needing --preset.
        DataLayoutError: a file whose content does not fit any accepted layout.
    """
    out = ImportedLists()
    for spec in specs:
        list_name, _, raw = spec.rpartition("=") if "=" in spec else ("", "", spec)
        path = builtin_path(raw.split(":", 1)[1]) if raw.startswith("builtin:") else Path(raw)
        if not path.is_file():
            raise ConfigError(f"--from-file {spec}: file {path} not found")
        data = path.read_bytes()
        record: dict[str, Any] = {
            "path": raw if raw.startswith("builtin:") else str(path.resolve()),
            "sha256": hashlib.sha256(data).hexdigest(),
            "lists": [],
        }
        if path.suffix.lower() == ".json":
            try:
                obj = json.loads(data.decode("utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise DataLayoutError(path, f"not valid JSON ({exc})") from None
            before = out.full
            found = _lists_from_json(obj, list_name, preset, spec, path, out)
            if out.full is not None and out.full is not before:
                record["provenance"] = out.full.provenance  # e.g. the LLM that wrote it
        else:
            name = list_name or path.stem
            kind, resolved = _resolve_name(name, preset, spec)
            found = [(kind, resolved, _read_text(path))]
        for kind, name, words in found:
            added = out.add(kind, name, words)
            record["lists"].append({"list": f"{kind}.{name}", "words": added})
        out.sources.append(record)
    return out


Found = list[tuple[str, str, list[str]]]  # (kind, list name, words) read from one file


def _lists_from_json(
    obj: Any,
    list_name: str,
    preset: DatasetPreset | None,
    spec: str,
    path: Path,
    out: ImportedLists,
) -> Found:
    """The lists of one JSON file, by its shape: a bare array (with LIST=), a complete
    word-list file, a `{"classes"/"target"/"spurious": ...}` object, or `{list: words}`."""
    if isinstance(obj, list):
        if not list_name:
            raise ConfigError(f"--from-file {spec}: a bare JSON array needs LIST=PATH")
        kind, name = _resolve_name(list_name, preset, spec)
        return [(kind, name, _strings(obj, path, name))]
    if not isinstance(obj, Mapping):
        raise DataLayoutError(path, "expected a JSON object or array of words")
    if list_name:
        raise ConfigError(f"--from-file {spec}: LIST= applies to text files and bare arrays")
    if obj.get("format") == FORMAT or "anchors" in obj:
        out.full = validate_wordlists(obj, path)
        return _lists_of_full_file(out.full, preset, spec)
    if any(k in obj for k in ("classes", "target", "spurious")):
        return _lists_by_kind(obj, preset, spec, path)
    return _lists_by_name(obj, preset, spec, path)


def _lists_of_full_file(full: WordLists, preset: DatasetPreset | None, spec: str) -> Found:
    """Every list of a complete word-list file (its names checked against the preset)."""
    found = []
    for kind, lists in (("classes", full.classes), ("spurious", full.spurious)):
        for name, words in lists.items():
            if preset is not None:
                _, name = _resolve_name(f"{kind}.{name}", preset, spec)
            found.append((kind, name, words))
    return found


def _lists_by_kind(obj: Mapping, preset: DatasetPreset | None, spec: str, path: Path) -> Found:
    """`{"classes" or "target": {...}, "spurious": {...}}`, each keyed by name or index."""
    found: Found = []
    for key, kind in (("classes", "classes"), ("target", "classes"), ("spurious", "spurious")):
        if key in obj:
            lists = _by_index_or_name(obj[key], kind, preset, spec, path)
            found += [(kind, n, _strings(w, path, f"{key}.{n}")) for n, w in lists.items()]
    return found


def _lists_by_name(obj: Mapping, preset: DatasetPreset | None, spec: str, path: Path) -> Found:
    """`{list name: [words]}`, each name resolved against the preset."""
    found = []
    for name, words in obj.items():
        if not isinstance(words, list):
            raise DataLayoutError(path, f"field '{name}' must be a list of words")
        kind, resolved = _resolve_name(name, preset, spec)
        found.append((kind, resolved, _strings(words, path, name)))
    return found
