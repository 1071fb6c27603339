"""Test-server submission files for CIRR (test1) and CIRCO (test).

Formats (`Cuberick-Orion/CIRR:Test-split_server.md`, `miccunifi/CIRCO:README.md`, writers in
`SEARLE:src/generate_test_submission.py` and `RTD:generate_test_submission.py`):

- CIRR: two JSON objects, `{"version": "rc2", "metric": "recall", "<pairid>": [50 names]}`
  and `{"version": "rc2", "metric": "recall_subset", "<pairid>": [3 names]}`, every test1
  pair present, the reference never among the names; the server takes up to 5 MB.
- CIRCO: `{"<query id>": [50 COCO image ids (ints)]}` for every test query.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from labshared.errors import ConfigError
from labshared.runs import atomic_write_json

CIRR_VERSION = "rc2"
CIRR_TOP = 50
CIRR_SUBSET_TOP = 3
CIRCO_TOP = 50
CIRR_MAX_BYTES = 5 * 1024 * 1024


def cirr_submissions(
    ranked: Mapping[str, Sequence[str]], subset_ranked: Mapping[str, Sequence[str]]
) -> tuple[dict, dict]:
    """Build the two CIRR dicts from per-pair rankings (reference already removed)."""
    recall: dict = {"version": CIRR_VERSION, "metric": "recall"}
    subset: dict = {"version": CIRR_VERSION, "metric": "recall_subset"}
    for pairid, names in ranked.items():
        if len(names) < CIRR_TOP:
            raise ConfigError(
                f"CIRR pair {pairid}: {len(names)} ranked images, the server needs {CIRR_TOP}"
            )
        recall[str(pairid)] = list(names[:CIRR_TOP])
    for pairid, names in subset_ranked.items():
        if len(names) < CIRR_SUBSET_TOP:
            raise ConfigError(
                f"CIRR pair {pairid}: {len(names)} subset images, the server needs "
                f"{CIRR_SUBSET_TOP}"
            )
        subset[str(pairid)] = list(names[:CIRR_SUBSET_TOP])
    return recall, subset


def circo_submission(ranked: Mapping[str, Sequence[str]]) -> dict[str, list[int]]:
    """Build the CIRCO dict: query id -> top-50 image ids as integers."""
    out = {}
    for qid, names in ranked.items():
        if len(names) < CIRCO_TOP:
            raise ConfigError(
                f"CIRCO query {qid}: {len(names)} ranked images, the server needs {CIRCO_TOP}"
            )
        out[str(qid)] = [int(n) for n in names[:CIRCO_TOP]]
    return out


def write_cirr(run_dir: Path, name: str, recall: dict, subset: dict) -> list[Path]:
    """Write `submissions/recall_submission_<name>.json` and
    `submissions/recall_subset_submission_<name>.json`."""
    folder = Path(run_dir) / "submissions"
    paths = [
        atomic_write_json(folder / f"recall_submission_{name}.json", recall),
        atomic_write_json(folder / f"recall_subset_submission_{name}.json", subset),
    ]
    for p in paths:
        if p.stat().st_size > CIRR_MAX_BYTES:
            raise ConfigError(
                f"{p} is {p.stat().st_size} bytes; the CIRR server accepts up to 5 MB"
            )
    return paths


def write_circo(run_dir: Path, name: str, submission: dict) -> list[Path]:
    """Write `submissions/circo_submission_<name>.json`."""
    return [
        atomic_write_json(
            Path(run_dir) / "submissions" / f"circo_submission_{name}.json", submission
        )
    ]
