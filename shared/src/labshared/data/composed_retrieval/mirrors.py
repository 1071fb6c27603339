"""Benchmarks that are not files in an official layout: the toy CIR world and the Hugging
Face mirrors of CIRR and FashionIQ (unofficial copies, licences unclear)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from labshared import toy
from labshared.data.composed_retrieval.official import FASHIONIQ_CATEGORIES
from labshared.data.composed_retrieval.records import (
    CIRBenchmark,
    CIRQuery,
    ColumnImages,
    TensorImages,
)
from labshared.data.composed_retrieval.records import check_split as _check_split
from labshared.errors import ConfigError, DataLayoutError
from labshared.toy.sources import toy_fingerprint


# --------------------------------------------------------------------------- toy world
def load_toy(
    split: str = "val",
    n_queries: int = 300,
    n_distractors: int | None = None,
    seed: int = 0,
    size: int = 32,
) -> list[CIRBenchmark]:
    """The toy CIR world (`labshared.toy.modification_triplets`) as a benchmark.

    Every gallery image showing the target's (digit, colour, background) counts as a
    ground truth (the exact target first), so metrics read like CIRCO's. Each query's
    `groups` holds the attribute its modification changes (`digit`, `colour` or
    `background`), for per-attribute metrics.

    Args:
        split: val or test: the toy world's digit instances and background bands of that
            split, never the ones the tiny CLIP was fitted on (train).
        n_queries: composed queries; the gallery holds their targets first.
        n_distractors: random images of the split added to the gallery (None: n_queries).
        seed: the toy world's data seed; it draws the queries, targets and distractors.
        size: image side in pixels.
    """
    _check_split("toy", split, ("val", "test"))
    world = toy.modification_triplets(
        split, n_queries, n_distractors=n_distractors, seed=seed, size=size
    )
    gal_names = [f"gal{j:05d}" for j in range(len(world.gallery_images))]
    tensors = {name: img for name, img in zip(gal_names, world.gallery_images, strict=True)}
    queries = []
    for i in range(len(world)):
        ref = f"ref{i:05d}"
        tensors[ref] = world.reference_images[i]
        exact = int(world.target_index[i])
        same = (
            (world.gallery_attrs == world.target_attrs[i]).all(dim=1).nonzero().flatten().tolist()
        )
        targets = (gal_names[exact], *[gal_names[j] for j in same if j != exact])
        queries.append(
            CIRQuery(str(i), ref, (world.texts[i],), targets, groups=(world.changed[i],))
        )
    tag = f"toy-{split}-n{n_queries}-d{n_distractors}-s{seed}-px{size}"
    images = TensorImages(tensors, tag, toy_fingerprint())
    return [CIRBenchmark("toy", split, queries, gal_names, images, None, [])]


# --------------------------------------------------------------------------- HF mirrors
def _need_columns(table: Any, columns: Sequence[str], name: str) -> None:
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise DataLayoutError(name, f"columns {missing} missing; found {table.column_names}")


def cirr_from_hf(
    queries: Any, images: Any, split: str = "val", tag: str = "royokong/cirr"
) -> CIRBenchmark:
    """CIRR from `royokong/cirr_val` rows (`pairid`, `candidate_id`, `target_id`,
    `caption`, optional `group` members) and `royokong/cirr_imgs` rows (`id`, `img`)."""
    _need_columns(queries, ["candidate_id", "caption"], f"{tag}_{split}")
    _need_columns(images, ["id", "img"], f"{tag}_imgs")
    rows = {str(n): i for i, n in enumerate(images["id"])}
    out = []
    for i, row in enumerate(
        queries.remove_columns([c for c in queries.column_names if c in ("candidate", "target")])
    ):
        targets = (
            (str(row["target_id"]),) if split == "val" and row.get("target_id") is not None else ()
        )
        subset = tuple(row["group"]) if isinstance(row.get("group"), list) else ()
        out.append(
            CIRQuery(
                str(row.get("pairid", i)),
                str(row["candidate_id"]),
                (row["caption"],),
                targets,
                subset,
            )
        )
    return CIRBenchmark(
        "cirr", split, out, list(rows), ColumnImages(images, "img", rows, tag), None, [tag]
    )


def fashioniq_from_hf(
    queries: Any, images: Any, category: str, tag: str = "royokong/fashioniq"
) -> CIRBenchmark:
    """One FashionIQ category from `royokong/fashioniq_val` rows (`category`,
    `candidate_id`, `target_id`, `caption`: [c1, c2]) and `fashioniq_val_imgs` rows
    (`id`, `img`, `category`)."""
    _need_columns(queries, ["category", "candidate_id", "target_id", "caption"], f"{tag}_val")
    _need_columns(images, ["id", "img", "category"], f"{tag}_val_imgs")
    cats = images["category"]
    rows = {
        str(n): i for i, (n, c) in enumerate(zip(images["id"], cats, strict=True)) if c == category
    }
    out = []
    for i, (cat, ref, tgt, caps) in enumerate(
        zip(
            queries["category"],
            queries["candidate_id"],
            queries["target_id"],
            queries["caption"],
            strict=True,
        )
    ):
        if cat == category:
            out.append(CIRQuery(str(i), str(ref), tuple(caps), (str(tgt),)))
    return CIRBenchmark(
        "fashioniq", "val", out, list(rows), ColumnImages(images, "img", rows, tag), category, [tag]
    )


def _hub(repo: str, split: str) -> Any:
    # `datasets` takes ~1 s to import and only the hub mirrors need it (start-up time).
    import datasets

    try:
        return datasets.load_dataset(repo, split=split)
    except Exception as exc:  # offline without a cache, unknown split, hub errors
        raise ConfigError(
            f"--data-root hf: could not load {repo} (split {split}) from the Hugging Face hub or "
            f"its local cache ({type(exc).__name__}: {exc}); download it once online, or use the "
            "official layout"
        ) from exc


def load_hf(dataset: str, split: str, parts: Iterable[str] | None = None) -> list[CIRBenchmark]:
    """The Hugging Face mirrors (need the hub or its local cache; honours HF_DATASETS_OFFLINE)."""
    if dataset == "cirr":
        _check_split("cirr", split, ("val", "test"))
        return [
            cirr_from_hf(
                _hub(f"royokong/cirr_{split}", split), _hub("royokong/cirr_imgs", split), split
            )
        ]
    if dataset == "fashioniq":
        _check_split("fashioniq", split, ("val",))
        queries, images = (
            _hub("royokong/fashioniq_val", "val"),
            _hub("royokong/fashioniq_val_imgs", "val"),
        )
        return [fashioniq_from_hf(queries, images, c) for c in parts or FASHIONIQ_CATEGORIES]
    raise ConfigError(
        f"--data-root hf: no Hugging Face copy of {dataset} is known (CIRR and FashionIQ only)"
    )
