"""One way to resolve a run's config and one rule for resuming it, for every tool.

- **Resolution** (`resolve`): dataclass defaults < the named preset < the flags actually
  passed. A flag left unset arrives as None and keeps the preset's value; a field name
  the config does not have is a programming error reported as a `ConfigError` naming it.
  The resolved config is validated before anything is created or loaded.
- **Resume** (`check_resume`): a resumed run must be the run it continues. Every field
  must equal the saved one, except the run-time knobs in `RUNTIME_KNOBS` (where it runs,
  how many loader workers, how often it logs, checkpoints or validates, where the data
  lies), which change how a run is carried out, not what it computes. The error names
  every changed field with its saved and its new value.
- **Names** (`unknown_name`): the one "did you mean" for presets, datasets, backbones,
  regularisers and the rest.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from labshared.errors import ConfigError
from labshared.runs import to_jsonable

T = TypeVar("T")

#: Fields a resumed run may change: how the run is carried out, not what it computes.
RUNTIME_KNOBS: frozenset[str] = frozenset(
    {
        "device",
        "num_workers",
        "workers",
        "data_root",
        "log_every",
        "checkpoint_every",
        "keep_last",
        "save_every",
        "val_every",
        "eval_every",
        "feature_batch_size",
        "eval_batch_size",
    }
)


@dataclasses.dataclass(frozen=True)
class Flag:
    """How a config field appears on the command line (kept in the field's metadata)."""

    help: str
    panel: str | None = None
    decls: tuple[str, ...] = ()
    cli_type: Any = None
    parse: Callable[[Any], Any] | None = None
    metavar: str | None = None
    choices: tuple[Any, ...] = ()


def check_choices(cfg: Any) -> None:
    """Each field declared with `choices` holds one of them (None aside), else the one "did
    you mean" error naming its flag. `labshared.config.resolve` calls it on every config."""
    for f in dataclasses.fields(cfg):
        flag, value = flag_of(f), getattr(cfg, f.name)
        if flag is not None and flag.choices and value is not None and value not in flag.choices:
            raise unknown_name(flag_name(f), value, flag.choices)


def flag_of(field: dataclasses.Field) -> Flag | None:
    """The field's `Flag`, or None when it is not a command-line option."""
    return field.metadata.get("flag")


def flag_name(field: dataclasses.Field) -> str:
    """The long option that sets `field` (`--steps`; `--gather-negatives` for a switch)."""
    flag = flag_of(field)
    decls = flag.decls if flag else ()
    longs = [d.split("/")[0] for d in decls if d.startswith("--")]
    return longs[0] if longs else "--" + field.name.replace("_", "-")


def unknown_name(kind: str, name: str, known: Iterable[str]) -> ConfigError:
    """The error for a name outside `known`: lists the known names and the closest one.

    Example: `unknown_name("--dataset", "cirrr", ["cirr", "circo"])` says
    "--dataset 'cirrr' is unknown; known: cirr, circo; did you mean 'cirr'?".
    """
    known = list(known)
    close = difflib.get_close_matches(str(name), [str(k) for k in known], n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ConfigError(f"{kind} {name!r} is unknown; known: {', '.join(map(str, known))}{hint}")


def resolve(
    presets: Mapping[str, T],
    preset: str,
    overrides: Mapping[str, Any],
    *,
    validate: Callable[[T], None] | None = None,
    renamed: Mapping[str, str] | None = None,
) -> T:
    """`presets[preset]` with every non-None override applied, then validated.

    Args:
        presets: name -> complete frozen dataclass config.
        preset: the `--preset` value.
        overrides: field name -> flag value (None: the flag was not passed).
        validate: extra checks on the resolved config (a dataclass's own `__post_init__`
            runs anyway); raises `ConfigError` naming the flag.
        renamed: old preset name -> what replaced it, for a clear message.

    Raises:
        ConfigError: unknown or renamed preset, unknown field, or a failed validation.
    """
    if preset not in presets:
        if renamed and preset in renamed:
            raise ConfigError(f"--preset {preset!r} was renamed: use {renamed[preset]}")
        raise unknown_name("--preset", preset, presets)
    base = presets[preset]
    given = {k: v for k, v in overrides.items() if v is not None}
    fields = {f.name for f in dataclasses.fields(base)}  # type: ignore[arg-type]
    unknown = sorted(set(given) - fields)
    if unknown:
        raise ConfigError(f"settings {unknown} are not fields of {type(base).__name__}")
    cfg = dataclasses.replace(base, **given)  # type: ignore[type-var]
    check_choices(cfg)
    if validate is not None:
        validate(cfg)
    return cfg


def changed_fields(
    saved: Mapping[str, Any], now: Mapping[str, Any], allowed: Iterable[str] = RUNTIME_KNOBS
) -> dict[str, tuple[Any, Any]]:
    """{field: (saved value, new value)} for every field that differs and is not allowed
    to (JSON forms compared, so a tuple equals the list it was saved as)."""
    allowed = set(allowed)
    saved_j, now_j = to_jsonable(dict(saved)), to_jsonable(dict(now))
    keys = (set(saved_j) | set(now_j)) - allowed
    return {
        k: (saved_j.get(k), now_j.get(k)) for k in sorted(keys) if saved_j.get(k) != now_j.get(k)
    }


def check_resume(
    saved: Mapping[str, Any],
    now: Mapping[str, Any],
    where: str,
    allowed: Iterable[str] = RUNTIME_KNOBS,
) -> None:
    """Refuse to resume `where` with a config that computes something else.

    Raises:
        ConfigError: naming every changed field with its saved and new value.
    """
    diff = changed_fields(saved, now, allowed)
    if diff:
        shown = "; ".join(f"{k}: saved {a!r}, now {b!r}" for k, (a, b) in diff.items())
        raise ConfigError(
            f"--resume {where}: the run was started with other settings ({shown}); pass the "
            f"saved values, or start a new run (only {', '.join(sorted(set(allowed)))} may "
            "change on resume)"
        )


def split_commas(value: str | None) -> tuple[str, ...] | None:
    """`"a, b,c"` -> ("a", "b", "c"); an empty list -> None (all)."""
    if value is None:
        return None
    return tuple(p.strip() for p in str(value).split(",") if p.strip()) or None


def float_list(value: str) -> tuple[float, ...]:
    """`"1,0.7,0.3"` -> (1.0, 0.7, 0.3); a bad number is a ConfigError naming it."""
    parts = split_commas(value) or ()
    try:
        return tuple(float(p) for p in parts)
    except ValueError as exc:
        raise ConfigError(f"expected comma-separated numbers, got {value!r}") from exc


# --------------------------------------------------------------------------- config files
def read_config_file(path: Path, config_type: type) -> tuple[dict[str, Any], dict[str, Any]]:
    """(fields, header) of a `--config` file: a run's config.json header (its `config`
    object, and the header for the preset and seed) or a JSON object of fields.

    Raises:
        ConfigError: unreadable JSON, not an object, a field the config does not have, or
            a value of the wrong type, each naming the file and the field.
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--config {path}: not a readable JSON file ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path}: expected a JSON object of config fields")
    header = data if isinstance(data.get("config"), dict) and "tool" in data else {}
    fields = dict(header["config"]) if header else data
    hints = typing.get_type_hints(config_type)
    known = {f.name for f in dataclasses.fields(config_type)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ConfigError(
            f"--config {path}: {', '.join(unknown)} are not fields of {config_type.__name__} "
            f"(its fields: {', '.join(sorted(known))})"
        )
    return {k: _from_json(v, hints[k], path, k) for k, v in fields.items()}, header


def _from_json(value: Any, hint: Any, path: Path, name: str) -> Any:
    """A JSON value as the field's type: lists become tuples, strings Paths, ints floats."""
    if value is None:
        return None
    base = strip_none(hint)
    origin = typing.get_origin(base)
    if origin is tuple:
        if not isinstance(value, list):
            raise ConfigError(f"--config {path}: field {name!r} expects a list, got {value!r}")
        (item, *_) = typing.get_args(base) or (Any,)
        return tuple(float(v) if item is float else v for v in value)
    if base is Path:
        return Path(value)
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if base in (int, float, str, bool) and not isinstance(value, base):
        raise ConfigError(f"--config {path}: field {name!r} expects {base.__name__}, got {value!r}")
    return value


def strip_none(hint: Any) -> Any:
    """`X | None` -> X."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return hint
