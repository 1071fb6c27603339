"""Device, precision and seeding, decided once per command (nanoGPT/torchtune style).

`setup_runtime` is the one call a command makes: it resolves `--device`, `--precision`,
`--seed`, joins torchrun's process group when present, sets TF32 (on only for
`--precision tf32`, off otherwise: `fp32` is strict fp32) and returns a frozen `Runtime`
that is passed down. Library code never reads a global device.
"""

from __future__ import annotations

import contextlib
import os
import random
from dataclasses import dataclass

import numpy as np
import torch

from labshared import distributed
from labshared.errors import ConfigError

PRECISIONS = ("auto", "fp32", "tf32", "bf16", "fp16")


def _cuda_summary() -> str:
    if not torch.cuda.is_available():
        built = torch.version.cuda or "none (CPU-only build)"
        return f"torch {torch.__version__} sees no CUDA device (CUDA build: {built})"
    n = torch.cuda.device_count()
    names = ", ".join(torch.cuda.get_device_name(i) for i in range(n))
    return f"{n} CUDA device(s): {names}"


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def resolve_device(spec: str = "auto", local_rank: int | None = None) -> torch.device:
    """Turn `auto|cpu|cuda|cuda:N|mps` into a checked `torch.device`.

    `auto` picks CUDA (the process's LOCAL_RANK device under torchrun), then MPS, then CPU.

    Raises:
        ConfigError: CUDA or MPS asked for but absent, or an index past the device count;
            the message says what was found.
    """
    spec = (spec or "auto").strip().lower()
    if local_rank is None:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "mps":
        if not _mps_available():
            raise ConfigError(
                "--device mps: MPS is not available on this machine; use --device cpu"
            )
        return torch.device("mps")
    if spec == "cuda" or spec.startswith("cuda:"):
        return _resolve_cuda(spec, local_rank)
    raise ConfigError(f"--device {spec!r}: expected one of auto, cpu, cuda, cuda:N, mps")


def _resolve_cuda(spec: str, local_rank: int) -> torch.device:
    """`cuda` (the LOCAL_RANK device) or `cuda:N`, checked against what torch sees."""
    if not torch.cuda.is_available():
        raise ConfigError(
            f"--device {spec}: CUDA was asked for, but {_cuda_summary()}; use --device cpu or auto"
        )
    if spec == "cuda":
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    try:
        index = int(spec.split(":", 1)[1])
    except ValueError:
        raise ConfigError(f"--device {spec}: expected cuda:N with an integer N") from None
    if index >= torch.cuda.device_count():
        raise ConfigError(f"--device {spec}: no such device; {_cuda_summary()}")
    return torch.device("cuda", index)


@dataclass(frozen=True)
class Precision:
    """What autocast does on this device.

    Attributes:
        name: `fp32`, `tf32`, `bf16` or `fp16` after resolving `auto`. `tf32` is fp32
            storage and autocast off, with TF32 matmuls and convolutions (Ampere and newer
            only: elsewhere `--precision tf32` resolves to `fp32`, which is what runs).
        dtype: the autocast dtype (float32 means autocast is off).
        use_grad_scaler: True only for fp16 on CUDA (bf16 needs no loss scaling).
    """

    name: str
    dtype: torch.dtype
    use_grad_scaler: bool

    @property
    def enabled(self) -> bool:
        """Whether autocast runs at all (False in fp32)."""
        return self.dtype != torch.float32


def resolve_precision(spec: str, device: torch.device) -> Precision:
    """`auto` means bf16 on GPUs that support it, fp16 (with a grad scaler) on older GPUs,
    fp32 on CPU and MPS. An explicit fp16/bf16 on CPU is refused: CPU autocast is slow and
    not what the papers ran. `tf32` is `tf32` only on a CUDA device of compute capability 8
    or more (the only ones with TF32 units), `fp32` elsewhere."""
    spec = (spec or "auto").strip().lower()
    if spec not in PRECISIONS:
        raise ConfigError(f"--precision {spec!r}: expected one of {', '.join(PRECISIONS)}")
    if device.type != "cuda":
        if spec in ("bf16", "fp16"):
            raise ConfigError(
                f"--precision {spec} needs a CUDA device (got {device}); use fp32 or auto"
            )
        return Precision("fp32", torch.float32, False)
    if spec == "tf32":
        has_tf32 = torch.cuda.get_device_capability(device)[0] >= 8
        return Precision("tf32" if has_tf32 else "fp32", torch.float32, False)
    if spec == "auto":
        spec = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if spec == "bf16":
        return Precision("bf16", torch.bfloat16, False)
    if spec == "fp16":
        return Precision("fp16", torch.float16, True)
    return Precision("fp32", torch.float32, False)


def autocast(device: torch.device, precision: Precision):
    """Autocast context for the forward pass; a no-op in fp32."""
    if not precision.enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=precision.dtype)


def make_grad_scaler(device: torch.device, precision: Precision) -> torch.amp.GradScaler:
    """A GradScaler that is active only for fp16 on CUDA (pass-through otherwise)."""
    return torch.amp.GradScaler(device.type, enabled=precision.use_grad_scaler)


def set_tf32(precision: Precision) -> bool:
    """TF32 matmuls and convolutions on for `tf32`, off for every other precision (torch
    leaves cuDNN's TF32 on by default, so `fp32` must turn it off to be fp32). The flags
    are process-wide, so every fp32 op of the run follows them. Returns whether TF32 is on."""
    on = precision.name == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = on
    torch.backends.cudnn.allow_tf32 = on
    return on


def seed_everything(seed: int, deterministic: bool = False) -> int:
    """Seed python, numpy and torch (all devices) once; returns the seed used.

    With `deterministic`, also ask torch for deterministic kernels (slower; some CUDA ops
    then need CUBLAS_WORKSPACE_CONFIG, which is set here).
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    return seed


@dataclass(frozen=True)
class Runtime:
    """Everything a workflow needs to know about where it runs; passed down, never global."""

    device: torch.device
    precision: Precision
    seed: int
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    tf32: bool = False

    @property
    def is_main(self) -> bool:
        """Whether this process is rank 0 (the one that writes files and logs)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Whether more than one process takes part (torchrun with DDP)."""
        return self.world_size > 1

    def autocast(self) -> contextlib.AbstractContextManager:
        """The autocast context of this runtime's device and precision (no-op in fp32)."""
        return autocast(self.device, self.precision)

    def describe(self) -> dict:
        """JSON-ready device, precision, seed, rank, world size, TF32 and torch version."""
        return {
            "device": str(self.device),
            "precision": self.precision.name,
            "seed": self.seed,
            "rank": self.rank,
            "world_size": self.world_size,
            "tf32": self.tf32,
            "torch": torch.__version__,
        }


def setup_runtime(
    device: str = "auto", precision: str = "auto", seed: int = 0, deterministic: bool = False
) -> Runtime:
    """Resolve device and precision, join torchrun's group if present, seed `seed + rank`."""
    dist_info = distributed.init_distributed(device)
    dev = resolve_device(device, dist_info.local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    prec = resolve_precision(precision, dev)
    tf32 = set_tf32(prec)
    seed_everything(seed + dist_info.rank, deterministic)
    return Runtime(
        dev, prec, seed, dist_info.rank, dist_info.world_size, dist_info.local_rank, tf32
    )
