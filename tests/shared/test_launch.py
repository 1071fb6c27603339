"""labshared.launch.start_run: validate first, then the folder; one header; one resume rule;
rank 0 decides the folder under torchrun."""

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from labshared.errors import ConfigError
from labshared.launch import read_header, start_run

#: A hang guard for subprocess runs, not a speed requirement (no test asserts speed).
HANG_GUARD_S = 900


@dataclass(frozen=True)
class Cfg:
    lr: float = 1e-3
    num_workers: int = 2


def _start(out, cfg=Cfg(), **kw):
    return start_run("tool", "train", cfg, version="0.1", preset="toy", output_dir=out, **kw)


def test_fresh_run_writes_one_header_with_everything(tmp_path):
    run = _start(tmp_path / "run", device="cpu", seed=3)
    header = read_header(run.dir)
    assert run.dir == tmp_path / "run" and not run.resumed
    assert {k: header[k] for k in ("tool", "command", "version", "preset")} == {
        "tool": "tool", "command": "train", "version": "0.1", "preset": "toy"
    }  # fmt: skip
    assert header["config"] == {"lr": 1e-3, "num_workers": 2}
    assert header["runtime"]["device"] == "cpu" and header["runtime"]["seed"] == 3
    assert "git_commit" in header and "started_at" in header


def test_a_failed_check_leaves_no_folder_and_the_corrected_rerun_works(tmp_path):
    out = tmp_path / "run"

    def bad():
        raise ConfigError("--dataset 'cirrr' is unknown")

    with pytest.raises(ConfigError, match="cirrr"):
        _start(out, validate=bad)
    with pytest.raises(ConfigError, match="--device"):
        _start(out, device="cuda:7")  # no such device: the runtime check comes first too
    assert not out.exists()
    assert _start(out, device="cpu").dir == out


def test_occupied_folder_needs_resume_or_overwrite(tmp_path):
    out = tmp_path / "run"
    _start(out, device="cpu")
    (out / "metrics.json").write_text("{}")
    with pytest.raises(ConfigError, match="is not empty; pass --resume .* or --overwrite"):
        _start(out, device="cpu")
    with pytest.raises(ConfigError, match="exclude each other"):
        _start(out, device="cpu", resume=True, overwrite=True)
    with pytest.raises(ConfigError, match="--resume needs --output-dir"):
        start_run("tool", "train", Cfg(), version="0.1", resume=True)
    _start(out, device="cpu", overwrite=True)
    assert not (out / "metrics.json").exists()


def test_resume_refuses_changed_fields_but_not_runtime_knobs(tmp_path):
    out = tmp_path / "run"
    _start(out, device="cpu", seed=1)
    run = _start(out, Cfg(num_workers=0), device="cpu", seed=1, resume=True)
    assert run.resumed and len(read_header(out)["resumed_at"]) == 1
    with pytest.raises(ConfigError, match="lr: saved 0.001, now 0.01"):
        _start(out, Cfg(lr=1e-2), device="cpu", seed=1, resume=True)
    with pytest.raises(ConfigError, match="seed: saved 1, now 2"):
        _start(out, device="cpu", seed=2, resume=True)
    with pytest.raises(ConfigError, match="config.json not found"):
        _start(tmp_path / "empty", device="cpu", resume=True)


def test_resume_compares_what_the_header_keeps(tmp_path):
    """A field the header leaves out (its name looks like a secret) is not a changed field
    on resume; a field it keeps still is."""
    cfg = {"lr": 1e-3, "hf_token": "t0k"}
    _start(tmp_path / "run", cfg, device="cpu")
    assert "hf_token" not in read_header(tmp_path / "run")["config"]
    assert _start(tmp_path / "run", cfg, device="cpu", resume=True).resumed
    with pytest.raises(ConfigError, match="lr: saved 0.001, now 0.01"):
        _start(tmp_path / "run", {**cfg, "lr": 1e-2}, device="cpu", resume=True)


def test_rank_zero_decides_the_folder_and_its_error_reaches_every_rank(tmp_path, free_port):
    """Two gloo processes under torchrun: both get rank 0's path (default folder names
    carry a timestamp that could differ), and both raise rank 0's error."""
    script = tmp_path / "worker.py"
    script.write_text(
        textwrap.dedent(
            """
            import json, os, sys
            from labshared import distributed
            from labshared.errors import ConfigError
            from labshared.launch import start_run
            out = sys.argv[1]
            run = start_run("tool", "x", {"a": 1}, version="0", output_dir=out, device="cpu")
            try:
                start_run("tool", "x", {"a": 1}, version="0", output_dir=out, device="cpu")
                err = None
            except ConfigError as exc:
                err = str(exc)
            rank = os.environ["RANK"]
            with open(f"{out}-rank{rank}.json", "w") as f:
                json.dump({"dir": str(run.dir), "rank": run.runtime.rank, "err": err}, f)
            # Leave the group together: a rank that exits while its peer still holds the
            # gloo connection can abort (SIGABRT) in the group's destructor.
            distributed.cleanup()
            """
        )
    )
    out = str(tmp_path / "run")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(free_port)]  # fmt: skip
    proc = subprocess.run(
        [*cmd, str(script), out + "-new"],
        env=env, capture_output=True, text=True, timeout=HANG_GUARD_S,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    results = [json.loads(Path(f"{out}-new-rank{r}.json").read_text()) for r in (0, 1)]
    assert results[0]["dir"] == results[1]["dir"] == out + "-new"
    assert [r["rank"] for r in results] == [0, 1]
    assert all("is not empty" in r["err"] for r in results)


def test_process_mismatch_names_the_global_batch():
    from labshared.launch import process_mismatch

    assert process_mismatch("p", 4, 128, 4) is None  # as designed
    assert process_mismatch("p", None, 128, 2) is None  # no design
    assert process_mismatch("rtd-vit-l14", 1, 128, 4) == (
        "preset rtd-vit-l14 is designed for 1 process(es) (global batch 128 = 1 x 128); this "
        "run has 4: global batch 512 = 4 x 128, gradients averaged over the processes; "
        "--batch-size 32 keeps the global batch"
    )
    assert process_mismatch("lincir-vit-l14", 8, 64, 3).endswith(
        "global batch 192 = 3 x 64, gradients averaged over the processes"
    )  # 512 is not a multiple of 3: no --batch-size hint


def test_a_training_run_records_its_global_batch(tmp_path):
    run = _start(tmp_path / "run", device="cpu", batch_size=16, preset_processes=1)
    runtime = read_header(run.dir)["runtime"]
    assert (runtime["global_batch"], runtime["gradients_averaged"]) == (16, False)
    assert runtime["preset_processes"] == 1
    plain = read_header(_start(tmp_path / "plain", device="cpu").dir)["runtime"]
    assert "global_batch" not in plain
