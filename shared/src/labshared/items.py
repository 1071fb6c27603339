"""Per-item outputs of a run: one Parquet table per kind of item, `<run>/items/<name>.parquet`.

Every evaluation writes here what it scored item by item (a query, an image), so a
reader can audit a number, recompute it, or compare two runs item by item (`<tool>
compare`, `labshared.compare`). Parquet through pyarrow (which `datasets` already
installs): columnar, typed, list columns for ranked ids, read by pandas, polars, DuckDB
and Spark. The schemas are in the root README ("Per-item outputs").

Conventions shared by every table: `key` columns name an item uniquely (a query id with
its benchmark part; an image file or index with its split), `group` is its stratum where
it has one, and each headline metric has a column holding the item's contribution to it
(0 / 100 for a recall in percent, 0 / 1 for a correct prediction, a float for a
similarity), so the headline number is that column's mean (or the aggregate named in
metrics.json). The table's `metadata` records which columns are keys and metrics.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from labshared.errors import ConfigError
from labshared.runs import atomic_write

ITEMS_DIR = "items"


def items_path(run_dir: str | Path, name: str) -> Path:
    """`<run_dir>/items/<name>.parquet`."""
    return Path(run_dir) / ITEMS_DIR / f"{name}.parquet"


def _column(values: Any):
    import pyarrow as pa

    if hasattr(values, "detach"):  # a torch tensor
        values = values.detach().cpu().numpy()
    if isinstance(values, np.ndarray) and values.ndim == 2:
        return pa.array(list(values))  # (N, K) -> list column (top-50 ids)
    if isinstance(values, np.ndarray):
        return pa.array(values)
    return pa.array(list(values))


def write_items(
    run_dir: str | Path,
    name: str,
    columns: Mapping[str, Any],
    *,
    keys: Sequence[str],
    metrics: Sequence[str] = (),
    meta: Mapping[str, Any] | None = None,
) -> Path:
    """Write one row per item to `<run_dir>/items/<name>.parquet`, atomically.

    Args:
        columns: column name -> (N,) values (arrays, tensors or lists; a list of lists or
            a (N, K) array becomes a list column).
        keys: the columns that identify an item (checked unique).
        metrics: the columns that are per-item contributions to headline numbers.
        meta: anything else worth keeping with the table (JSON-serialisable).

    Raises:
        ValueError: columns of unequal length, a key or metric column missing, or
            duplicate keys.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrays = {k: _column(v) for k, v in columns.items()}
    lengths = {k: len(a) for k, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"item columns differ in length: {lengths}")
    absent = [c for c in (*keys, *metrics) if c not in arrays]
    if absent:
        raise ValueError(f"columns {absent} named as keys/metrics are not among {list(arrays)}")
    table = pa.table(arrays)
    if keys:
        key_rows = list(zip(*(table.column(k).to_pylist() for k in keys), strict=True))
        if len(set(key_rows)) != len(key_rows):
            raise ValueError(f"{name}: key columns {list(keys)} are not unique")
    info = {"keys": list(keys), "metrics": list(metrics), **(meta or {})}
    table = table.replace_schema_metadata({"labshared": json.dumps(info)})
    return atomic_write(items_path(run_dir, name), lambda p: pq.write_table(table, p))


def read_items(run_dir: str | Path, name: str):
    """The table `write_items` wrote, as a `pyarrow.Table` (`.to_pandas()`, `.column(c)`).

    Raises:
        ConfigError: no such file, or not a Parquet file.
    """
    import pyarrow.parquet as pq

    path = items_path(run_dir, name)
    if not path.is_file():
        raise ConfigError(
            f"{path}: no per-item table; runs written before per-item outputs existed have "
            "none: rerun the command"
        )
    try:
        return pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise ConfigError(f"{path}: not a readable Parquet file ({exc})") from None


def items_meta(table) -> dict[str, Any]:
    """The `keys`, `metrics` and other metadata `write_items` stored in the table."""
    raw = (table.schema.metadata or {}).get(b"labshared")
    return json.loads(raw) if raw else {"keys": [], "metrics": []}


def column(table, name: str) -> np.ndarray:
    """One column as a numpy array (list columns as an object array)."""
    return table.column(name).to_numpy(zero_copy_only=False)
