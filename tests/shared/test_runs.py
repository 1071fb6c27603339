"""Run folders, secret scrubbing, atomic writes and resumable checkpoints."""

import json

import pytest
import torch

from labshared import runs
from labshared.errors import ConfigError


def test_scrub_keeps_token_counts_and_tokenizers_but_drops_tokens():
    cfg = {"max_tokens": 64, "tokenizer": "bpe", "hf_token": "t0k", "access_token": "a"}
    assert runs.scrub_secrets(cfg) == {"max_tokens": 64, "tokenizer": "bpe"}


def _state(v: float):
    return {"w": torch.full((3, 2), v), "b": torch.arange(2.0) + v}


def test_checkpoint_roundtrip_and_latest(tmp_path):
    opt_state = {"step": 5, "lr": torch.tensor(0.1)}
    runs.save_checkpoint(tmp_path, 5, _state(1.0), opt_state, {"model": "lenet"})
    runs.save_checkpoint(tmp_path, 10, _state(2.0), opt_state, {"model": "lenet"})
    runs.save_checkpoint(tmp_path, 15, _state(3.0), opt_state, {"model": "lenet"}, keep_last=2)
    assert [p.name for p in runs.list_checkpoints(tmp_path)] == ["step-00000010", "step-00000015"]
    model, train, meta = runs.load_checkpoint(runs.latest_checkpoint(tmp_path))
    assert torch.equal(model["w"], torch.full((3, 2), 3.0))
    assert meta == {"step": 15, "model": "lenet"} and train["step"] == 5


def test_interrupted_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    runs.save_checkpoint(tmp_path, 1, _state(1.0), {"step": 1})

    real_save_file = runs.save_file

    def half_write_then_crash(tensors, path, metadata=None):
        real_save_file(tensors, path, metadata=metadata)  # bytes hit the disk...
        raise KeyboardInterrupt("killed half-way")  # ...then the process dies

    monkeypatch.setattr(runs, "save_file", half_write_then_crash)
    with pytest.raises(KeyboardInterrupt):
        runs.save_checkpoint(tmp_path, 2, _state(2.0), {"step": 2})
    monkeypatch.setattr(runs, "save_file", real_save_file)

    latest = runs.latest_checkpoint(tmp_path)
    assert latest.name == "step-00000001"
    model, train, meta = runs.load_checkpoint(latest)
    assert torch.equal(model["w"], torch.full((3, 2), 1.0)) and meta["step"] == 1
    # No half-written files are left behind next to it.
    leftovers = [p.name for p in (tmp_path / "checkpoints").iterdir()]
    assert leftovers == ["step-00000001"]


def test_interrupted_overwrite_of_a_single_file_keeps_old_content(tmp_path):
    path = tmp_path / "cache.json"
    runs.atomic_write_json(path, {"v": 1})

    def crash(p):
        p.write_text('{"v": 2, "trunc')
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        runs.atomic_write(path, crash)
    assert json.loads(path.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["cache.json"]


def test_state_loads_with_weights_only(tmp_path):
    runs.atomic_torch_save(tmp_path / "s.pt", {"opt": {"state": {0: {"exp_avg": torch.ones(2)}}}})
    loaded = runs.safe_torch_load(tmp_path / "s.pt")
    assert torch.equal(loaded["opt"]["state"][0]["exp_avg"], torch.ones(2))


@pytest.mark.parametrize("content", [b"", b"garbage that is not a checkpoint", b"PK\x03\x04xx"])
def test_read_torch_file_turns_any_bad_file_into_one_config_error(tmp_path, content):
    from labshared.runs import read_torch_file

    bad = tmp_path / "phi.pt"
    bad.write_bytes(content)
    with pytest.raises(ConfigError, match=r"--phi .*phi\.pt: not a readable torch checkpoint"):
        read_torch_file(bad, flag="--phi", expected="a SEARLE phi .pt")
    with pytest.raises(ConfigError, match="does not exist; expected a SEARLE phi"):
        read_torch_file(tmp_path / "absent.pt", flag="--phi", expected="a SEARLE phi .pt")


def test_read_torch_file_refuses_arbitrary_pickles(tmp_path):
    from labshared.runs import read_torch_file

    path = tmp_path / "evil.pt"
    torch.save({"w": torch.ones(1)}, path)
    assert torch.equal(read_torch_file(path, flag="--x", expected="y")["w"], torch.ones(1))
    torch.save({"obj": ConfigError("an arbitrary object, not a tensor")}, path)
    with pytest.raises(ConfigError, match="--x .*evil.pt: not a readable torch checkpoint"):
        read_torch_file(path, flag="--x", expected="y")


def test_read_safetensors_round_trip_and_bad_files(tmp_path):
    from labshared.runs import atomic_save_safetensors, read_safetensors

    good = atomic_save_safetensors(tmp_path / "w.safetensors", {"a": torch.ones(2)}, {"k": "v"})
    tensors, meta = read_safetensors(good, flag="--text-encoder", expected="safetensors")
    assert torch.equal(tensors["a"], torch.ones(2)) and meta == {"k": "v"}
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    with pytest.raises(ConfigError, match="--text-encoder .*bad.safetensors: not a readable"):
        read_safetensors(bad, flag="--text-encoder", expected="a text tower")
    with pytest.raises(ConfigError, match="is a folder"):
        read_safetensors(tmp_path, flag="--text-encoder", expected="a text tower")
