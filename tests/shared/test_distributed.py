"""Two CPU processes under torchrun (gloo): DDP averages gradients, all_gather collects."""

import json
import subprocess
import sys
import textwrap

import torch

from labshared import distributed

WORKER = textwrap.dedent(
    """
    import json, os, sys
    import torch
    from labshared import distributed
    from labshared.device import setup_runtime

    rt = setup_runtime("cpu", "fp32", seed=0)
    rank, world = rt.rank, rt.world_size
    # Same initial weights on both ranks (DDP also broadcasts rank 0's).
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1, bias=False)
    ddp = distributed.wrap_ddp(model, rt.device)
    # Rank r sees input (r+1) * ones: local grad of sum(w.x) is (r+1) * ones.
    x = torch.full((1, 3), float(rank + 1))
    ddp(x).sum().backward()
    gathered = distributed.all_gather(torch.tensor([rank * 10.0, rank * 10.0 + 1]))
    mean = distributed.all_reduce_mean(torch.tensor([float(rank)]))
    out = {
        "rank": rank, "world": world, "is_main": distributed.is_main(),
        "grad": model.weight.grad.tolist(), "gathered": gathered.tolist(),
        "mean": mean.item(), "ddp": type(ddp).__name__,
    }
    with open(os.path.join(sys.argv[1], f"rank{rank}.json"), "w") as f:
        json.dump(out, f)
    distributed.cleanup()
    """
)

#: A hang guard for subprocess runs, not a speed requirement (no test asserts speed).
HANG_GUARD_S = 900


def test_two_process_gloo_ddp_and_all_gather(tmp_path, free_port):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "--master_addr", "127.0.0.1", "--master_port", str(free_port),
        str(script), str(tmp_path),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for r, res in enumerate(results):
        assert res["rank"] == r and res["world"] == 2 and res["is_main"] == (r == 0)
        assert res["ddp"] == "DistributedDataParallel"
        # DDP averages the local gradients 1*ones and 2*ones -> 1.5*ones on every rank.
        assert res["grad"] == [[1.5, 1.5, 1.5]]
        assert res["gathered"] == [0.0, 1.0, 10.0, 11.0]
        assert res["mean"] == 0.5


def test_single_process_fallback(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    info = distributed.init_distributed("cpu")
    assert (info.rank, info.world_size) == (0, 1)
    t = torch.arange(3.0)
    assert distributed.all_gather(t) is t
    assert distributed.get_world_size() == 1 and distributed.is_main()
    model = torch.nn.Linear(2, 2)
    assert distributed.wrap_ddp(model, torch.device("cpu")) is model
    distributed.barrier()
    distributed.cleanup()
