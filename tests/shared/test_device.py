"""Device resolution, precision policy and seeding (CPU-only machine)."""

import pytest
import torch

from labshared import device as dev
from labshared.errors import ConfigError


def test_auto_and_cpu_resolve_to_cpu_here(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(dev, "_mps_available", lambda: False)
    assert dev.resolve_device("auto") == torch.device("cpu")
    assert dev.resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("spec", ["cuda", "cuda:0", "cuda:3"])
def test_missing_cuda_error_names_what_was_found(monkeypatch, spec):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError) as err:
        dev.resolve_device(spec)
    msg = str(err.value)
    assert spec in msg and "no CUDA device" in msg and torch.__version__ in msg


def test_cuda_index_past_device_count(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: f"FakeGPU{i}")
    assert dev.resolve_device("cuda:1") == torch.device("cuda", 1)
    assert dev.resolve_device("cuda", local_rank=3) == torch.device("cuda", 1)
    with pytest.raises(ConfigError, match="FakeGPU0, FakeGPU1"):
        dev.resolve_device("cuda:2")


@pytest.mark.parametrize("spec", ["gpu", "cuda:x", "tpu"])
def test_bad_device_spec(spec):
    with pytest.raises(ConfigError):
        dev.resolve_device(spec)


def test_precision_policy(monkeypatch):
    cpu = torch.device("cpu")
    assert dev.resolve_precision("auto", cpu).dtype == torch.float32
    assert not dev.resolve_precision("fp32", cpu).enabled
    with pytest.raises(ConfigError, match="needs a CUDA device"):
        dev.resolve_precision("bf16", cpu)
    with pytest.raises(ConfigError, match="expected one of"):
        dev.resolve_precision("fp8", cpu)
    gpu = torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    p = dev.resolve_precision("auto", gpu)
    assert (p.name, p.dtype, p.use_grad_scaler) == ("bf16", torch.bfloat16, False)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    p = dev.resolve_precision("auto", gpu)
    assert (p.name, p.dtype, p.use_grad_scaler) == ("fp16", torch.float16, True)


def test_autocast_is_noop_in_fp32():
    prec = dev.resolve_precision("fp32", torch.device("cpu"))
    with dev.autocast(torch.device("cpu"), prec):
        y = torch.ones(2, 2) @ torch.ones(2, 2)
    assert y.dtype == torch.float32
    scaler = dev.make_grad_scaler(torch.device("cpu"), prec)
    assert not scaler.is_enabled()


def test_seed_everything_is_deterministic():
    def draw():
        import random

        import numpy as np

        return (random.random(), float(np.random.rand()), torch.rand(3).tolist())

    dev.seed_everything(123)
    a = draw()
    dev.seed_everything(123)
    b = draw()
    dev.seed_everything(124)
    c = draw()
    assert a == b and a != c


def test_setup_runtime_single_process(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    rt = dev.setup_runtime("cpu", "auto", seed=7)
    assert rt.device.type == "cpu" and rt.precision.name == "fp32"
    assert (rt.rank, rt.world_size, rt.is_main, rt.distributed) == (0, 1, True, False)
    assert rt.describe()["seed"] == 7


def _fake_gpu(monkeypatch, major: int) -> torch.device:
    """A CUDA device of compute capability (major, 0) as far as precision and TF32 go."""
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (major, 0))
    return torch.device("cuda", 0)


@pytest.fixture
def tf32_flags():
    """Restore the process-wide TF32 flags whatever the test sets them to."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_fp32_is_strict_and_tf32_is_an_opt_in(monkeypatch, tf32_flags):
    """On an (simulated) Ampere GPU `fp32` turns both TF32 flags off (cuDNN's is on by
    torch's default) and `tf32` turns them on; neither autocasts."""
    gpu = _fake_gpu(monkeypatch, 8)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    fp32 = dev.resolve_precision("fp32", gpu)
    assert dev.set_tf32(fp32) is False
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    tf32 = dev.resolve_precision("tf32", gpu)
    assert (tf32.name, tf32.dtype, tf32.enabled) == ("tf32", torch.float32, False)
    assert dev.set_tf32(tf32) is True
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    # bf16 autocast leaves fp32 ops in fp32, not TF32
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert dev.set_tf32(dev.resolve_precision("auto", gpu)) is False
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32


def test_tf32_without_tf32_units_is_fp32(monkeypatch, tf32_flags):
    """A pre-Ampere GPU and the CPU have no TF32: the run is fp32 and says so."""
    assert dev.resolve_precision("tf32", _fake_gpu(monkeypatch, 7)).name == "fp32"
    assert dev.resolve_precision("tf32", torch.device("cpu")).name == "fp32"


def test_setup_runtime_records_tf32_in_the_runtime(monkeypatch, tf32_flags):
    """setup_runtime on a simulated Ampere GPU: `tf32` is in describe() (the run header)
    and `fp32` leaves both flags off."""
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    gpu = _fake_gpu(monkeypatch, 9)
    monkeypatch.setattr(dev, "resolve_device", lambda spec, local_rank=None: gpu)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: None)
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda s: None)
    rt = dev.setup_runtime("cuda", "tf32", seed=1)
    assert rt.describe()["precision"] == "tf32" and rt.describe()["tf32"] is True
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    rt = dev.setup_runtime("cuda", "fp32", seed=1)
    assert rt.describe()["precision"] == "fp32" and rt.describe()["tf32"] is False
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
