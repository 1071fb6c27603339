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
