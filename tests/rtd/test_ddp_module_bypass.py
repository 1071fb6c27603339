"""Why `rtd-vit-l14` is one process: the official RTD step calls its trainable tower through
`.module`, past the DDP wrapper (`jaeseokbyun/RTD:train_text_encoder.py` line 262,
`encode_with_pseudo_tokens_HF(text_encoder_train.module, ...)`, which then calls the
tower's submodules). Two gloo processes show what that does: through `.module` each rank
keeps its own gradient (DDP's reducer never runs); through the DDP forward both get the
average."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

# One Linear(3, 1) without bias, equal on both ranks; rank r sees x = (r + 1) * [1, 2, 3],
# and loss = output summed, so rank r's own weight gradient is exactly its x.
WORKER = textwrap.dedent(
    """
    import json, sys
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    tower = torch.nn.Sequential(torch.nn.Linear(3, 1, bias=False))
    ddp = torch.nn.parallel.DistributedDataParallel(tower)
    x = (rank + 1) * torch.tensor([[1.0, 2.0, 3.0]])
    # the official step: the wrapped model's submodule called through .module
    ddp.module[0](x).sum().backward()
    bypass = tower[0].weight.grad.flatten().tolist()
    tower.zero_grad(set_to_none=True)
    # the same step through the DDP forward
    ddp(x).sum().backward()
    through = tower[0].weight.grad.flatten().tolist()
    with open(f"{sys.argv[1]}-rank{rank}.json", "w") as f:
        json.dump({"module": bypass, "ddp": through}, f)
    dist.barrier()
    dist.destroy_process_group()
    """
)


def test_module_call_skips_ddp_averaging_and_ddp_forward_averages(tmp_path, free_port):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    out = str(tmp_path / "grads")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(free_port)]  # fmt: skip
    hang_guard_s = 300  # a hang guard, not a speed requirement: the run takes seconds
    proc = subprocess.run(
        [*cmd, str(script), out], env=env, capture_output=True, text=True, timeout=hang_guard_s
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    grads = [json.loads(Path(f"{out}-rank{r}.json").read_text()) for r in (0, 1)]
    assert grads[0]["module"] == [1.0, 2.0, 3.0]  # rank 0's own gradient
    assert grads[1]["module"] == [2.0, 4.0, 6.0]  # rank 1's own: never averaged
    assert grads[0]["ddp"] == grads[1]["ddp"] == [1.5, 3.0, 4.5]  # the average of both
