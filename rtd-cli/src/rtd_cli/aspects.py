"""CIRCO's semantic aspects: which of the nine aspects each validation query is annotated with
(`semantic_aspects` in `miccunifi/CIRCO:annotations/val.json`), for the per-aspect mAP@10 of
`CIRCO:src/evaluation.py`. Kept apart from `evaluate.py` so that `rtd check-data` reads it
without importing any model code."""

from __future__ import annotations

from pathlib import Path

from labshared.data.composed_retrieval import CIRCO_LAYOUT
from labshared.data.composed_retrieval.records import list_of, read_json
from labshared.errors import DataLayoutError


def circo_semantic_aspects(bench) -> list[tuple[str, ...]] | None:
    """Per query of a CIRCO val benchmark, its `semantic_aspects` from the annotation file
    (`annotations/val.json`, read again here: the shared loader keeps what ranking needs).
    None when no item has the field (copies of the annotations from before it was added).

    Raises:
        DataLayoutError: a `semantic_aspects` that is not a list of strings.
    """
    path = Path(bench.annotation_files[0])
    by_id: dict[str, tuple[str, ...]] = {}
    for i, item in enumerate(list_of(read_json(path, CIRCO_LAYOUT), path, CIRCO_LAYOUT)):
        if "semantic_aspects" not in item:
            continue
        aspects = item["semantic_aspects"]
        if not isinstance(aspects, list) or not all(isinstance(a, str) for a in aspects):
            raise DataLayoutError(
                path, f"item {i}: field 'semantic_aspects' must be a list of strings", CIRCO_LAYOUT
            )
        by_id[str(item["id"])] = tuple(aspects)
    if not by_id:
        return None
    return [by_id.get(q.query_id, ()) for q in bench.queries]
