"""labshared.config: one resolver (defaults < preset < flags), one resume rule, one
"did you mean"."""

from dataclasses import dataclass

import pytest

from labshared.config import RUNTIME_KNOBS, changed_fields, check_resume, resolve, unknown_name
from labshared.errors import ConfigError


@dataclass(frozen=True)
class Cfg:
    lr: float = 1e-3
    steps: int = 10
    layers: tuple[int, ...] = (1, 2)
    num_workers: int = 4

    def __post_init__(self):
        if self.lr <= 0:
            raise ConfigError(f"--lr {self.lr}: expected > 0")


PRESETS = {"toy": Cfg(steps=5), "paper": Cfg(lr=1e-5, steps=2000)}


def test_defaults_then_preset_then_the_flags_that_were_passed():
    cfg = resolve(PRESETS, "toy", {"lr": 0.1, "steps": None})
    assert cfg == Cfg(lr=0.1, steps=5)  # steps None: the preset's 5; layers: the default
    assert resolve(PRESETS, "paper", {}) == PRESETS["paper"]


def test_bad_values_unknown_presets_fields_and_renamed_presets_fail_first():
    with pytest.raises(ConfigError, match="--lr -1"):
        resolve(PRESETS, "toy", {"lr": -1})
    with pytest.raises(
        ConfigError, match="--preset 'paepr' is unknown; known: toy, paper; did you mean 'paper'"
    ):
        resolve(PRESETS, "paepr", {})
    with pytest.raises(ConfigError, match=r"settings \['epochs'\] are not fields of Cfg"):
        resolve(PRESETS, "toy", {"epochs": 3})
    with pytest.raises(ConfigError, match="'old' was renamed: use paper"):
        resolve(PRESETS, "old", {}, renamed={"old": "paper"})
    seen = []
    resolve(PRESETS, "toy", {}, validate=seen.append)
    assert seen == [PRESETS["toy"]]


def test_unknown_name_lists_the_known_and_the_closest():
    err = unknown_name("--dataset", "cirrr", ["fashioniq", "cirr", "circo"])
    assert str(err) == (
        "--dataset 'cirrr' is unknown; known: fashioniq, cirr, circo; did you mean 'cirr'?"
    )
    assert "did you mean" not in str(unknown_name("--base", "zzz", ["lincir", "searle"]))


def test_resume_allows_only_runtime_knobs_and_names_every_changed_field():
    saved = {"lr": 1e-3, "steps": 10, "layers": [1, 2], "num_workers": 4, "device": "cuda"}
    now = {"lr": 1e-3, "steps": 10, "layers": (1, 2), "num_workers": 0, "device": "cpu"}
    assert changed_fields(saved, now) == {}  # tuple == saved list; knobs may change
    check_resume(saved, now, "runs/x")
    now = {**now, "lr": 2e-3, "steps": 20}
    assert changed_fields(saved, now) == {"lr": (1e-3, 2e-3), "steps": (10, 20)}
    with pytest.raises(ConfigError) as err:
        check_resume(saved, now, "runs/x")
    assert "lr: saved 0.001, now 0.002; steps: saved 10, now 20" in str(err.value)
    assert "num_workers" in str(err.value)  # the message lists what may change
    assert {"device", "num_workers", "log_every"} <= RUNTIME_KNOBS
