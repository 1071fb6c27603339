"""Text triplets (reference caption, conditioning text, target caption) for RTD training.

Sources, all read into one list of `TextTriplet`:

- a `.json` file: a list of objects (the official `LLM_triplets.json`, which
  `jaeseokbyun/RTD:loader.py::build_loader_RTD` reads through `datasets.load_dataset("json")`)
  or an object of equal-length columns;
- a `.jsonl` file: one object per line;
- a folder written by `datasets.Dataset.save_to_disk` (or a `DatasetDict` holding `split`);
- a Hugging Face hub dataset id (e.g. `navervision/SynthTriplets18M`), read with
  `datasets.load_dataset(id, split=split)`; honours `HF_DATASETS_OFFLINE`;
- `toy` or `toy:N`: N (default 5000) triplets of the toy CIR world's caption grammar
  (`labshared.toy.text_triplets`).

The field names default to the official ones (`reference_caption`, `conditioning_caption`,
`target_caption`); `columns` maps them to other names. Rows whose fields are missing, not
strings or empty are skipped but counted, and their indices kept, so the caller can report
which rows were dropped (the official loader would crash on `None.lower()` or train on "").
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labshared import toy
from labshared.errors import ConfigError, DataLayoutError

FIELDS = ("reference_caption", "conditioning_caption", "target_caption")
ROLES = ("reference", "conditioning", "target")
LAYOUT = """\
LLM_triplets.json     [{"reference_caption": "...", "conditioning_caption": "...",
                        "target_caption": "..."}, ...]
or triplets.jsonl     one such object per line
or <save_to_disk dir> a datasets.Dataset with those three string columns"""


@dataclass(frozen=True)
class TextTriplet:
    """One training triplet: T_r (reference caption), T_c (modification), T_t (target)."""

    reference: str
    conditioning: str
    target: str


@dataclass
class SkippedRow:
    """A source row that gave no triplet: its index and every problem found in it."""

    index: int
    problems: list[str]


@dataclass
class TripletSet:
    """Loaded triplets plus what was skipped and why."""

    source: str
    triplets: list[TextTriplet]
    skipped: list[SkippedRow] = field(default_factory=list)
    total_rows: int = 0

    def __len__(self) -> int:
        return len(self.triplets)

    def skipped_summary(self, max_rows: int = 10) -> str:
        """One line: how many rows were skipped, the first few indices and their reasons."""
        if not self.skipped:
            return f"{self.source}: all {self.total_rows} rows usable"
        shown = "; ".join(
            f"row {s.index}: {', '.join(s.problems)}" for s in self.skipped[:max_rows]
        )
        more = f" (+{len(self.skipped) - max_rows} more)" if len(self.skipped) > max_rows else ""
        return (
            f"{self.source}: skipped {len(self.skipped)} of {self.total_rows} rows with "
            f"missing or empty fields: {shown}{more}"
        )

    def report(self) -> dict[str, Any]:
        """JSON-ready counts: rows read, used, skipped, and the first 1000 skipped indices."""
        return {
            "source": self.source,
            "rows": self.total_rows,
            "used": len(self.triplets),
            "skipped": len(self.skipped),
            "skipped_rows": [s.index for s in self.skipped[:1000]],
        }


def parse_columns(spec: str | Mapping[str, str] | None) -> dict[str, str]:
    """`"ref=a,cond=b,target=c"` (or a dict role -> column) to the role -> column map.

    Roles accept `reference|ref`, `conditioning|cond|modification|mod`, `target`.
    """
    cols = dict(zip(ROLES, FIELDS, strict=True))
    if spec is None or spec == "":
        return cols
    aliases = {
        "reference": "reference", "ref": "reference",
        "conditioning": "conditioning", "cond": "conditioning",
        "modification": "conditioning", "mod": "conditioning",
        "target": "target",
    }  # fmt: skip
    items = (
        spec.items()
        if isinstance(spec, Mapping)
        else (part.split("=", 1) if "=" in part else (part, "") for part in spec.split(","))
    )
    for role, column in items:
        role = role.strip().lower()
        if role not in aliases or not str(column).strip():
            raise ConfigError(
                f"--triplet-columns {spec!r}: expected role=column pairs with roles ref, cond, "
                "target (e.g. 'ref=source_caption,cond=instruction,target=target_caption')"
            )
        cols[aliases[role]] = str(column).strip()
    return cols


def triplets_from_rows(
    rows: Iterable[Mapping[str, Any]], source: str, columns: Mapping[str, str] | None = None
) -> TripletSet:
    """Validate rows (mappings) into triplets, counting and indexing the unusable ones."""
    cols = parse_columns(columns)
    triplets: list[TextTriplet] = []
    skipped: list[SkippedRow] = []
    total = 0
    for index, row in enumerate(rows):
        total += 1
        if not isinstance(row, Mapping):
            skipped.append(SkippedRow(index, [f"not an object ({type(row).__name__})"]))
            continue
        values, problems = [], []
        for role in ROLES:
            name = cols[role]
            value = row.get(name)
            if value is None:
                problems.append(f"'{name}' missing")
            elif not isinstance(value, str):
                problems.append(f"'{name}' is {type(value).__name__}, not a string")
            elif not value.strip():
                problems.append(f"'{name}' empty")
            values.append(value.strip() if isinstance(value, str) else "")
        if problems:
            skipped.append(SkippedRow(index, problems))
        else:
            triplets.append(TextTriplet(*values))
    return TripletSet(source, triplets, skipped, total)


def _read_json(path: Path) -> list[Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataLayoutError(path, f"not valid JSON ({exc})", LAYOUT) from None
    if isinstance(data, list):
        return data
    if isinstance(data, dict) and data and all(isinstance(v, list) for v in data.values()):
        lengths = {len(v) for v in data.values()}
        if len(lengths) != 1:
            raise DataLayoutError(path, f"columns have different lengths {sorted(lengths)}", LAYOUT)
        keys = list(data)
        return [dict(zip(keys, vals, strict=True)) for vals in zip(*data.values(), strict=True)]
    raise DataLayoutError(
        path, f"top level is {type(data).__name__}; expected a list of objects", LAYOUT
    )


def _read_jsonl(path: Path) -> list[Any]:
    rows: list[Any] = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DataLayoutError(
                    path, f"line {lineno} is not valid JSON ({exc})", LAYOUT
                ) from None
    return rows


def _check_hf_columns(ds: Any, where: str, cols: Mapping[str, str]) -> None:
    names = list(getattr(ds, "column_names", []) or [])
    missing = [c for c in cols.values() if c not in names]
    if missing:
        raise DataLayoutError(
            where,
            f"dataset has columns {names} but lacks {missing}; map them with "
            "--triplet-columns ref=<col>,cond=<col>,target=<col>",
            LAYOUT,
        )


def _read_saved_dataset(path: Path, split: str) -> Any:
    # `datasets` takes ~1 s to import and only folder and hub sources need it (start-up time).
    import datasets

    ds = datasets.load_from_disk(str(path))
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise DataLayoutError(path, f"DatasetDict has splits {list(ds)}, not {split!r}", LAYOUT)
        ds = ds[split]
    return ds


def _read_hub_dataset(name: str, split: str) -> Any:
    # `datasets` takes ~1 s to import and only hub sources need it (start-up time).
    import datasets

    try:
        return datasets.load_dataset(name, split=split)
    except Exception as exc:  # offline, unknown id, missing split: say which and why
        raise ConfigError(
            f"could not load Hugging Face dataset {name!r} split {split!r}: {exc}. "
            "Offline runs need it in the HF cache (HF_DATASETS_OFFLINE=1 forbids downloads); "
            "or pass a local .json/.jsonl file or a save_to_disk folder"
        ) from None


def load_text_triplets(
    source: str | Path,
    *,
    columns: str | Mapping[str, str] | None = None,
    split: str = "train",
    limit: int | None = None,
    toy_seed: int = 0,
) -> TripletSet:
    """Read text triplets from `source` (see the module docstring for the forms).

    Args:
        source: `toy[:N]`, a .json/.jsonl file, a save_to_disk folder, or a hub dataset id.
        columns: role -> column map or "ref=a,cond=b,target=c"; default the official names.
        split: split of a hub dataset or DatasetDict.
        limit: keep only the first `limit` rows (before validation), for quick runs.
        toy_seed: the toy world's data seed, which draws the `toy[:N]` triplets (ignored
            for every other source).

    Raises:
        DataLayoutError: a file or folder that is not in the expected layout.
        ConfigError: a source that is neither a file, a folder, `toy` nor a loadable id;
            or no usable row at all.
    """
    cols = parse_columns(columns)
    text = str(source)
    path = Path(text).expanduser()
    if text == "toy" or text.startswith("toy:"):
        n = _toy_count(text)
        rows: Sequence[Any] = [_toy_row(t) for t in toy.text_triplets(n, seed=toy_seed)]
        label = f"toy:{n}" + (f" (toy seed {toy_seed})" if toy_seed else "")
        cols = dict(zip(ROLES, FIELDS, strict=True))
    elif path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".jsonl":
            rows = _read_jsonl(path)
        elif suffix == ".json":
            rows = _read_json(path)
        else:
            raise DataLayoutError(path, f"unknown triplet file type {suffix!r}", LAYOUT)
        label = str(path)
    elif path.is_dir():
        ds = _read_saved_dataset(path, split)
        _check_hf_columns(ds, str(path), cols)
        rows = ds
        label = str(path)
    elif path.suffix.lower() in (".json", ".jsonl") or text.startswith((".", "/", "~")):
        raise DataLayoutError(path, "file not found", LAYOUT)
    elif "/" in text:
        ds = _read_hub_dataset(text, split)
        _check_hf_columns(ds, text, cols)
        rows = ds
        label = f"hf:{text}[{split}]"
    else:
        raise ConfigError(
            f"triplet source {text!r} is neither 'toy', an existing .json/.jsonl file or "
            "folder, nor a Hugging Face dataset id (owner/name)"
        )
    if limit is not None:
        rows = (
            rows.select(range(min(limit, len(rows)))) if hasattr(rows, "select") else rows[:limit]
        )
    result = triplets_from_rows(rows, label, cols)
    if not result.triplets:
        raise ConfigError(f"{result.skipped_summary()}; no usable triplet left")
    return result


TOY_DEFAULT_COUNT = 5000


def _toy_count(text: str) -> int:
    if text == "toy":
        return TOY_DEFAULT_COUNT
    count = text.split(":", 1)[1]
    if not count.isdigit() or int(count) <= 0:
        raise ConfigError(
            f"triplet source {text!r}: expected toy or toy:N with N a positive integer"
        )
    return int(count)


def _toy_row(item: Any) -> Mapping[str, Any]:
    """The toy world's triplets as rows with the official field names."""
    if isinstance(item, Mapping):
        return item
    if isinstance(item, TextTriplet):
        return {"reference_caption": item.reference, "conditioning_caption": item.conditioning,
                "target_caption": item.target}  # fmt: skip
    if isinstance(item, Sequence) and len(item) == 3:
        return dict(zip(FIELDS, item, strict=True))
    return {name: getattr(item, name, None) for name in FIELDS}


# --------------------------------------------------------------------------- captions
CAPTION_LAYOUT = """\
captions.txt     one caption a line
captions.json    ["a caption", ...] or [{"text": "a caption"}, ...]
captions.jsonl   {"text": "a caption"} a line
<save_to_disk>   a datasets.Dataset with a `text` column (LinCIR's hub sets:
                 dangne/gcc_caption_only, FredZhang7/stable-diffusion-prompts-2.47M,
                 Geonmo/midjourney-prompts-only, all with `text`)"""


@dataclass
class CaptionSet:
    """Loaded captions plus the indices of the unusable rows."""

    source: str
    captions: list[str]
    skipped: list[int] = field(default_factory=list)
    total_rows: int = 0

    def __len__(self) -> int:
        return len(self.captions)

    def skipped_summary(self, max_rows: int = 10) -> str:
        """One line: how many rows were skipped and the first few indices."""
        if not self.skipped:
            return f"{self.source}: all {self.total_rows} captions usable"
        shown = ", ".join(map(str, self.skipped[:max_rows]))
        more = f" (+{len(self.skipped) - max_rows} more)" if len(self.skipped) > max_rows else ""
        return (
            f"{self.source}: skipped {len(self.skipped)} of {self.total_rows} rows with a "
            f"missing, non-string or empty caption: rows {shown}{more}"
        )


def load_captions(
    source: str | Path,
    *,
    column: str = "text",
    split: str = "train",
    limit: int | None = None,
    toy_seed: int = 0,
) -> CaptionSet:
    """Captions for LinCIR-style projection training (`rtd train-phi`).

    `source`: `toy[:N]` (the reference and target captions of N toy triplets, drawn with
    the data seed `toy_seed`), a .txt / .json / .jsonl file, a save_to_disk folder or a hub
    dataset id (column `column`).
    Unusable rows are counted and indexed as for triplets.

    Raises:
        DataLayoutError: a file of unknown type, a dataset without `column`, or a source
            that does not exist.
        ConfigError: a hub id that cannot be loaded, or no usable caption at all.
    """
    rows, label = _caption_rows(str(source), column, split, limit, toy_seed)
    if limit is not None:
        rows = rows[:limit]
    captions, skipped = [], []
    for index, row in enumerate(rows):
        value = row.get(column) if isinstance(row, Mapping) else row
        if isinstance(value, str) and value.strip():
            captions.append(value.strip())
        else:
            skipped.append(index)
    result = CaptionSet(label, captions, skipped, len(rows))
    if not captions:
        raise ConfigError(f"{result.skipped_summary()}; no usable caption left")
    return result


def _caption_rows(
    text: str, column: str, split: str, limit: int | None, toy_seed: int
) -> tuple[Any, str]:
    """The raw caption rows of a `load_captions` source (not yet validated) and its label."""
    path = Path(text).expanduser()
    if text == "toy" or text.startswith("toy:"):
        rows: Any = []
        for t in toy.text_triplets(_toy_count(text), seed=toy_seed):
            rows += [t["reference_caption"], t["target_caption"]]
        return rows, f"toy:{_toy_count(text)}" + (f" (toy seed {toy_seed})" if toy_seed else "")
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".txt":
            return path.read_text(encoding="utf-8").splitlines(), str(path)
        if suffix == ".json":
            return _read_json(path), str(path)
        if suffix == ".jsonl":
            return _read_jsonl(path), str(path)
        raise DataLayoutError(path, f"unknown caption file type {suffix!r}", CAPTION_LAYOUT)
    if path.is_dir() or "/" in text and not text.startswith((".", "/", "~")):
        ds = _read_saved_dataset(path, split) if path.is_dir() else _read_hub_dataset(text, split)
        names = list(ds.column_names)
        if column not in names:
            raise DataLayoutError(
                text,
                f"dataset has columns {names}, not {column!r}; pass --caption-column",
                CAPTION_LAYOUT,
            )
        rows = ds[column] if limit is None else ds.select(range(min(limit, len(ds))))[column]
        return rows, str(path) if path.is_dir() else f"hf:{text}[{split}]"
    raise DataLayoutError(
        path, "not found (expected toy, a file, a folder or a hub id)", CAPTION_LAYOUT
    )
