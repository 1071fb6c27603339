"""The word-list file shared by `tldr generate`, `tldr filter` and `tldr retrain`.

The official code keeps its lists as Python dicts keyed '0', '1', ... in
`TLDR:datasets/text_template.py` (e.g. `waterbirds_template`, L691), with the anchor
prompts beside them. We keep the same content in one JSON file that says what each list
is, which anchors go with it and where the words came from::

    {
      "format": "tldr-wordlists/1",
      "dataset": "waterbirds",
      "classes":  {"landbird": ["White-crowned Sparrow", ...], "waterbird": [...]},
      "spurious": {"land": ["Bamboo forest", ...], "water": [...]},
      "anchors": {
        "classes":  {"landbird": "a photo of a landbird.", "waterbird": "..."},
        "spurious": {"land": "a photo of a landplace.", "water": "..."}
      },
      "word_template": "a photo of a {}.",
      "pairs": null,
      "provenance": {"source": "llm", "model": "...", "base_url": "...", ...}
    }

Rules (checked by `validate_wordlists`, which raises DataLayoutError naming the field):

- `classes` and `spurious` are ordered: the i-th class is label i of the dataset, the j-th
  spurious value is spurious attribute j (JSON objects keep their order).
- Every list holds non-empty strings with no case-insensitive repeat (`dedupe_words`).
  Repeats ACROSS lists are allowed: the official lists overlap on purpose and the filter
  removes the ambiguous words.
- `anchors.classes` / `anchors.spurious` have exactly the keys of `classes` / `spurious`.
- `word_template` has one `{}`: the neutral prompt a word is put in for the CLIP filter.
- `pairs` is null (every class word pairs with every spurious word) or maps every class
  to the spurious values it may pair with (SpuCoAnimals: birds with land/water only, dogs
  with indoor/outdoor only, `TLDR:datasets/generate_text.py:L264-282`).
- `provenance` is free-form JSON (model, base_url, prompts, temperature, created_at,
  counts, requests, ...); it never holds an API key (`save_wordlists` refuses one).
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labshared.errors import DataLayoutError
from labshared.runs import SECRET_PATTERN, atomic_write_json

FORMAT = "tldr-wordlists/1"
DEFAULT_WORD_TEMPLATE = "a photo of a {}."

LAYOUT = """\
{
  "format": "tldr-wordlists/1",
  "dataset": "<name>",
  "classes":  {"<class 0>": ["word", ...], "<class 1>": [...]},
  "spurious": {"<value 0>": ["word", ...], "<value 1>": [...]},
  "anchors":  {"classes": {"<class 0>": "a photo of a ...", ...},
               "spurious": {"<value 0>": "a photo of a ...", ...}},
  "word_template": "a photo of a {}.",
  "pairs": null or {"<class>": ["<value>", ...], ...},
  "provenance": {...}
}"""

_SPACES = re.compile(r"\s+")


# --------------------------------------------------------------------------- words
def normalize_word(word: str) -> str:
    """Trim, collapse inner whitespace and NFC-normalise; keeps the case as written."""
    return _SPACES.sub(" ", unicodedata.normalize("NFC", word)).strip()


def word_key(word: str) -> str:
    """The identity used for de-duplication: normalised and case-folded."""
    return normalize_word(word).casefold()


def dedupe_words(words: Iterable[str], seen: Iterable[str] = ()) -> list[str]:
    """Normalised words in first-seen order, dropping case-insensitive repeats and blanks.

    Args:
        words: candidate words.
        seen: words already kept elsewhere (compared case-insensitively); none of these
            is returned again. Used to grow a list across several LLM replies.
    """
    keys = {word_key(w) for w in seen}
    out: list[str] = []
    for w in words:
        norm = normalize_word(w)
        key = norm.casefold()
        if norm and key not in keys:
            keys.add(key)
            out.append(norm)
    return out


# --------------------------------------------------------------------------- the file
@dataclass(frozen=True)
class WordLists:
    """Validated word lists. Mappings keep their order: position = label / attribute index.

    Attributes:
        dataset: preset or dataset name ("waterbirds", "celeba", "spuco-animals", "toy").
        classes: class name -> words naming things of that class.
        spurious: spurious value name -> words naming that value.
        class_anchors: class name -> anchor prompt (stage-1 filter).
        spurious_anchors: spurious value name -> anchor prompt.
        word_template: neutral prompt with one `{}` for a word (filter).
        pairs: None (all pairs) or class name -> allowed spurious value names.
        provenance: where the words came from (free-form, JSON-serialisable).
    """

    dataset: str
    classes: dict[str, list[str]]
    spurious: dict[str, list[str]]
    class_anchors: dict[str, str]
    spurious_anchors: dict[str, str]
    word_template: str = DEFAULT_WORD_TEMPLATE
    pairs: dict[str, list[str]] | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def class_names(self) -> list[str]:
        return list(self.classes)

    @property
    def spurious_names(self) -> list[str]:
        return list(self.spurious)

    def allowed_spurious(self, class_name: str) -> list[str]:
        """Spurious values the class's words pair with (all of them unless `pairs`)."""
        if self.pairs is None:
            return self.spurious_names
        return list(self.pairs[class_name])

    def counts(self) -> dict[str, dict[str, int]]:
        return {
            "classes": {k: len(v) for k, v in self.classes.items()},
            "spurious": {k: len(v) for k, v in self.spurious.items()},
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "dataset": self.dataset,
            "classes": {k: list(v) for k, v in self.classes.items()},
            "spurious": {k: list(v) for k, v in self.spurious.items()},
            "anchors": {
                "classes": dict(self.class_anchors),
                "spurious": dict(self.spurious_anchors),
            },
            "word_template": self.word_template,
            "pairs": None if self.pairs is None else {k: list(v) for k, v in self.pairs.items()},
            "provenance": self.provenance,
        }


def _fail(path: Path, problem: str) -> DataLayoutError:
    return DataLayoutError(path, problem, LAYOUT)


def _check_lists(obj: Any, name: str, path: Path) -> dict[str, list[str]]:
    if not isinstance(obj, Mapping) or not obj:
        raise _fail(path, f"field '{name}' must be a non-empty object of name -> list of words")
    out: dict[str, list[str]] = {}
    for key, words in obj.items():
        where = f"{name}.{key}"
        if not isinstance(key, str) or not key.strip():
            raise _fail(path, f"field '{name}' has an empty list name")
        if not isinstance(words, list):
            raise _fail(
                path, f"field '{where}' must be a list of strings, got {type(words).__name__}"
            )
        seen: dict[str, int] = {}
        for i, w in enumerate(words):
            if not isinstance(w, str) or not normalize_word(w):
                raise _fail(path, f"field '{where}[{i}]' must be a non-empty string, got {w!r}")
            k = word_key(w)
            if k in seen:
                raise _fail(
                    path,
                    f"field '{where}[{i}]' {w!r} repeats item {seen[k]} (case-insensitive); "
                    "de-duplicate the list (`tldr generate --from-file` does this)",
                )
            seen[k] = i
        out[key] = list(words)
    return out


def _check_anchors(obj: Any, name: str, expected: list[str], path: Path) -> dict[str, str]:
    where = f"anchors.{name}"
    if not isinstance(obj, Mapping):
        raise _fail(path, f"field '{where}' must be an object of list name -> anchor prompt")
    if set(obj) != set(expected):
        raise _fail(path, f"field '{where}' has keys {sorted(obj)}; expected the {name} {expected}")
    for key in expected:
        if not isinstance(obj[key], str) or not obj[key].strip():
            raise _fail(path, f"field '{where}.{key}' must be a non-empty prompt string")
    return {key: obj[key] for key in expected}


def validate_wordlists(obj: Any, path: str | Path = "<word lists>") -> WordLists:
    """Check a parsed word-list object and return it as `WordLists`.

    Raises:
        DataLayoutError: naming `path` and the first offending field.
    """
    path = Path(path)
    if not isinstance(obj, Mapping):
        raise _fail(path, f"top level must be a JSON object, got {type(obj).__name__}")
    fmt = obj.get("format", FORMAT)
    if fmt != FORMAT:
        raise _fail(path, f"field 'format' is {fmt!r}; this version reads {FORMAT!r}")
    dataset = obj.get("dataset")
    if not isinstance(dataset, str) or not dataset:
        raise _fail(path, "field 'dataset' must be a non-empty string")
    classes = _check_lists(obj.get("classes"), "classes", path)
    spurious = _check_lists(obj.get("spurious"), "spurious", path)
    anchors = obj.get("anchors")
    if not isinstance(anchors, Mapping):
        raise _fail(path, "field 'anchors' must be an object with 'classes' and 'spurious'")
    class_anchors = _check_anchors(anchors.get("classes"), "classes", list(classes), path)
    spurious_anchors = _check_anchors(anchors.get("spurious"), "spurious", list(spurious), path)
    template = obj.get("word_template", DEFAULT_WORD_TEMPLATE)
    if not isinstance(template, str) or template.count("{}") != 1:
        raise _fail(
            path, f"field 'word_template' must contain exactly one '{{}}', got {template!r}"
        )
    pairs = obj.get("pairs")
    if pairs is not None:
        if not isinstance(pairs, Mapping) or set(pairs) != set(classes):
            raise _fail(
                path,
                f"field 'pairs' must be null or map every class {list(classes)} "
                "to a list of spurious values",
            )
        for key, values in pairs.items():
            if not isinstance(values, list) or not values or any(v not in spurious for v in values):
                raise _fail(
                    path,
                    f"field 'pairs.{key}' must be a non-empty list drawn from "
                    f"the spurious values {list(spurious)}, got {values!r}",
                )
        pairs = {key: list(pairs[key]) for key in classes}
    provenance = obj.get("provenance", {})
    if not isinstance(provenance, Mapping):
        raise _fail(path, "field 'provenance' must be an object")
    return WordLists(
        dataset=dataset,
        classes=classes,
        spurious=spurious,
        class_anchors=class_anchors,
        spurious_anchors=spurious_anchors,
        word_template=template,
        pairs=pairs,
        provenance=dict(provenance),
    )


def load_wordlists(path: str | Path) -> WordLists:
    """Read and validate a word-list JSON file.

    Raises:
        DataLayoutError: the file is missing, not JSON, or breaks a rule above.
    """
    path = Path(path)
    if not path.is_file():
        raise _fail(path, "word-list file not found")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _fail(path, f"not valid JSON ({exc})") from None
    return validate_wordlists(obj, path)


def _find_secret_keys(obj: Any, where: str = "") -> list[str]:
    found: list[str] = []
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            here = f"{where}.{k}" if where else str(k)
            if SECRET_PATTERN.search(str(k)):
                found.append(here)
            found += _find_secret_keys(v, here)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            found += _find_secret_keys(v, f"{where}[{i}]")
    return found


def save_wordlists(path: str | Path, wordlists: WordLists | Mapping[str, Any]) -> Path:
    """Validate and write atomically (temporary file + rename). Returns the path.

    Raises:
        DataLayoutError: the lists break a rule, or the provenance has a credential-like key.
    """
    path = Path(path)
    obj = wordlists.to_dict() if isinstance(wordlists, WordLists) else dict(wordlists)
    validated = validate_wordlists(obj, path)
    secrets = _find_secret_keys(validated.provenance, "provenance")
    if secrets:
        raise _fail(path, f"refusing to write credential-like fields {secrets}")
    return atomic_write_json(path, validated.to_dict())
