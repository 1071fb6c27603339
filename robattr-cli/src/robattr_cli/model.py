"""Classifier builders, the ReLU -> Softplus(beta) transform, and checkpoint reloading.

Architectures follow the official `project/module/models/` of `joshua840/RobustAGA`:
- `lenet` (`lenet.py`): conv3x3 32 -> 32 -> maxpool -> 64 -> 64 -> maxpool -> FC 4096->256
  -> FC 256->10, all convolutions with padding 1; CIFAR-10 (3 x 32 x 32).
- `resnet18-cifar` (`resnet.py`, the kuangliu-style net): 3x3 stem without max-pool,
  BasicBlocks [2, 2, 2, 2], 4x4 average pool, linear 512 -> classes; 32 x 32 inputs.
- `resnet18`: `torchvision.models.resnet18(num_classes=100)` for ImageNet-100 (random
  init; nothing is downloaded).
- `mnist-cnn`: ours, a two-conv net for the offline MNIST-5k toy runs.

The paper replaces every ReLU with Softplus(beta=3) (Dombrowski et al. 2019);
`swap_activation` does this recursively on modules, as the official
`utils/convert_activation.py` does, so every architecture here uses activation modules,
never functional `F.relu`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from labshared.config import unknown_name
from labshared.errors import ConfigError
from labshared.runs import latest_checkpoint, read_safetensors

ACTIVATIONS = ("softplus", "relu")


# --------------------------------------------------------------------------- architectures
class LeNet(nn.Module):
    """The official CIFAR LeNet (4 convs, 2 max-pools, 2 FCs)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
        )  # fmt: skip
        self.fc1 = nn.Linear(64 * 8 * 8, 256)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(256, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x).flatten(1)  # (B, 4096)
        return self.fc2(self.act(self.fc1(h)))


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or 1x1 conv-BN) shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.act1 = nn.ReLU()
        self.act2 = nn.ReLU()
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(out + self.shortcut(x))


class ResNet18Cifar(nn.Module):
    """ResNet-18 for 32 x 32 inputs: 3x3 stem, no max-pool, 4x4 average pool at the end."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU()
        )
        layers, in_planes = [], 64
        for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers.append(
                nn.Sequential(BasicBlock(in_planes, planes, stride), BasicBlock(planes, planes))
            )
            in_planes = planes
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AvgPool2d(4)
        self.linear = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.layers(self.stem(x))  # (B, 512, 4, 4)
        return self.linear(self.pool(h).flatten(1))


class MnistCNN(nn.Module):
    """A small CNN for 1 x 28 x 28 digits (ours; ~0.1 M parameters, fast on a CPU)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (B, 16, 14, 14)
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (B, 32, 7, 7)
        )  # fmt: skip
        self.fc1 = nn.Linear(32 * 7 * 7, 64)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.features(x).flatten(1))))


def _torchvision_resnet18(num_classes: int) -> nn.Module:
    # Imported here for start-up time: torchvision.models is a heavy import that only the
    # ImageNet-100 model needs.
    from torchvision.models import resnet18

    return resnet18(weights=None, num_classes=num_classes)


@dataclass(frozen=True)
class ModelSpec:
    """A registry entry: the builder and the input it expects.

    Attributes:
        build: `num_classes -> nn.Module` (ReLU activations; see `swap_activation`).
        in_channels: input channels the first layer takes.
        image_size: input side the head is sized for (None: any size, adaptive pooling).
        description: one line for `--help` and error messages.
    """

    build: Callable[[int], nn.Module]
    in_channels: int
    image_size: int | None
    description: str


MODELS: dict[str, ModelSpec] = {
    "lenet": ModelSpec(LeNet, 3, 32, "official CIFAR LeNet (4 conv + 2 FC)"),
    "resnet18-cifar": ModelSpec(ResNet18Cifar, 3, 32, "kuangliu-style ResNet-18 for 32x32"),
    "resnet18": ModelSpec(_torchvision_resnet18, 3, None, "torchvision ResNet-18 (ImageNet-100)"),
    "mnist-cnn": ModelSpec(MnistCNN, 1, 28, "small CNN for the MNIST-5k toy"),
}


def get_model_spec(name: str) -> ModelSpec:
    if name not in MODELS:
        raise unknown_name("--model", name, MODELS)
    return MODELS[name]


# --------------------------------------------------------------------------- activation
def swap_activation(model: nn.Module, activation: str, beta: float = 3.0) -> nn.Module:
    """Replace every ReLU and Softplus module, recursively and in place, by `activation`.

    `softplus` gives Softplus(beta): smooth, so input Hessians (and the double-backprop
    regulariser) are not zero almost everywhere. `relu` gives a non-in-place ReLU (in-place
    activations break gradients taken with respect to inputs inside attacks).

    Returns:
        The same `model`, for chaining.
    """
    if activation not in ACTIVATIONS:
        raise unknown_name("--activation", activation, ACTIVATIONS)
    if activation == "softplus" and not beta > 0:
        raise ConfigError(f"--beta {beta}: the Softplus beta must be > 0")
    for name, child in model.named_children():
        if isinstance(child, nn.ReLU | nn.Softplus):
            new = nn.Softplus(beta=beta) if activation == "softplus" else nn.ReLU()
            setattr(model, name, new)
        else:
            swap_activation(child, activation, beta)
    return model


class ElementaryBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d written with elementary tensor ops in training mode, so it can be
    differentiated to any order (torch's fused batch_norm stops at second order, which the
    Hessian regulariser's third-order backward needs). Same parameters, buffers, running
    statistics (unbiased variance, momentum) and outputs as `nn.BatchNorm2d`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        mean = x.mean(dim=(0, 2, 3))  # (C,)
        var = x.var(dim=(0, 2, 3), unbiased=False)
        if self.track_running_stats:
            with torch.no_grad():
                n = x.numel() / x.shape[1]
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1 / self.num_batches_tracked
                self.running_mean.lerp_(mean.detach(), m)
                self.running_var.lerp_(var.detach() * n / max(n - 1, 1), m)
        shape = (1, -1, 1, 1)
        out = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out


def use_elementary_batchnorm(model: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d, recursively and in place, by `ElementaryBatchNorm2d`
    (weights and running statistics kept). Needed to train BN networks with the Hessian
    regulariser; the state_dict keys do not change. Returns `model`."""
    for name, child in model.named_children():
        if type(child) is nn.BatchNorm2d:
            new = ElementaryBatchNorm2d(
                child.num_features, child.eps, child.momentum, child.affine,
                child.track_running_stats, **_factory_kwargs(child),
            )  # fmt: skip
            new.load_state_dict(child.state_dict())
            new.train(child.training)
            setattr(model, name, new)
        else:
            use_elementary_batchnorm(child)
    return model


def _factory_kwargs(module: nn.Module) -> dict[str, Any]:
    """device and dtype of a module's first floating-point tensor (empty if none)."""
    for tensor in module.state_dict().values():
        if tensor.is_floating_point():
            return {"device": tensor.device, "dtype": tensor.dtype}
    return {}


def build_model(
    name: str, num_classes: int, activation: str = "softplus", beta: float = 3.0
) -> nn.Module:
    """Build a registered architecture with its activations set (paper: softplus, beta 3)."""
    return swap_activation(get_model_spec(name).build(num_classes), activation, beta)


# --------------------------------------------------------------------------- checkpoints
META_KEYS = ("model", "num_classes", "activation", "beta", "dataset", "mean", "std")


def model_meta(
    name: str, num_classes: int, activation: str, beta: float, dataset: Any
) -> dict[str, Any]:
    """What a checkpoint must carry to rebuild its model and its input normalisation.

    Args:
        dataset: a `labshared.data.image_classification.DatasetInfo`.
    """
    return {
        "model": name,
        "num_classes": num_classes,
        "activation": activation,
        "beta": beta,
        "dataset": dataset.name,
        "mean": list(dataset.mean),
        "std": list(dataset.std),
        "image_size": dataset.image_size,
        "in_channels": dataset.channels,
    }


CHECKPOINT_FORMAT = (
    "a `robattr train` run folder (with checkpoints/step-*/) or one of its checkpoint "
    "folders (model.safetensors + meta.json)"
)


def resolve_checkpoint(path: str | Path, which: str = "last") -> Path:
    """A checkpoint folder from a run folder or a checkpoint folder.

    Args:
        path: a `robattr train` run folder, one of its `checkpoints/<name>` folders, or the
            `model.safetensors` / `meta.json` file inside such a folder.
        which: for a run folder, "last" (the latest step-* checkpoint; the official
            evaluation reloads `last.ckpt`) or "best" (highest validation accuracy).

    Raises:
        ConfigError: anything else; the message names the path and the expected format.
    """
    path = Path(path)
    if which not in ("last", "best"):
        raise ConfigError(f"checkpoint choice {which!r}: expected last or best")
    if path.is_file() and path.name in ("model.safetensors", "meta.json"):
        path = path.parent
    elif not path.is_dir():
        what = "is a file, not a folder" if path.exists() else "does not exist"
        raise ConfigError(f"--checkpoint {path}: {what}; expected {CHECKPOINT_FORMAT}")
    if (path / "model.safetensors").is_file() or (path / "meta.json").is_file():
        return path
    if which == "best":
        best = path / "checkpoints" / "best"
        if (best / "meta.json").is_file():
            return best
    else:
        last = latest_checkpoint(path)
        if last is not None:
            return last
    raise ConfigError(
        f"--checkpoint {path}: no checkpoint there (no model.safetensors, no "
        f"checkpoints/{'best' if which == 'best' else 'step-*'}/meta.json); expected "
        f"{CHECKPOINT_FORMAT}"
    )


def read_meta(ckpt: Path) -> dict[str, Any]:
    """The checkpoint's meta.json, checked for the fields that rebuild the model."""
    path = ckpt / "meta.json"
    expected = f"a JSON object with {', '.join(META_KEYS)} (written by `robattr train`)"
    if not path.is_file():
        raise ConfigError(f"--checkpoint {path}: does not exist; expected {expected}")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(
            f"--checkpoint {path}: not valid JSON ({exc}); expected {expected}"
        ) from None
    if not isinstance(meta, dict):
        raise ConfigError(
            f"--checkpoint {path}: holds a {type(meta).__name__}; expected {expected}"
        )
    absent = [k for k in META_KEYS if k not in meta]
    if absent:
        raise ConfigError(
            f"--checkpoint {path}: fields {', '.join(absent)} absent; expected {expected}"
        )
    for key, known in (("model", MODELS), ("activation", ACTIVATIONS)):
        if meta[key] not in known:
            raise ConfigError(
                f"--checkpoint {path}: {unknown_name(key, meta[key], known)}; expected {expected}"
            )
    try:
        meta["num_classes"], meta["beta"] = int(meta["num_classes"]), float(meta["beta"])
    except (TypeError, ValueError):
        raise ConfigError(
            f"--checkpoint {path}: num_classes {meta['num_classes']!r} / beta {meta['beta']!r} "
            f"are not numbers; expected {expected}"
        ) from None
    return meta


def state_dict_mismatch(
    expected: dict[str, torch.Tensor], given: dict[str, torch.Tensor]
) -> str | None:
    """The first difference between two state dicts (missing or extra key, or a shape),
    as a short phrase; None when `given` fits `expected`."""
    missing = [k for k in expected if k not in given]
    extra = [k for k in given if k not in expected]
    if missing:
        return f"{len(missing)} tensors missing, first {missing[0]}"
    if extra:
        return f"{len(extra)} unexpected tensors, first {extra[0]}"
    for key, value in expected.items():
        if tuple(given[key].shape) != tuple(value.shape):
            return (
                f"{key} has shape {tuple(given[key].shape)}, the model needs {tuple(value.shape)}"
            )
    return None


def load_trained(
    path: str | Path, device: torch.device | str = "cpu", which: str = "last"
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a trained classifier from its checkpoint's meta, weights loaded, eval mode.

    Only the weights and meta.json are read (the optimiser state is not needed here).

    Args:
        path: run folder or checkpoint folder (see `resolve_checkpoint`).
        device: where to put the model.
        which: "last" or "best" when `path` is a run folder.

    Returns:
        (model, meta); meta holds model, num_classes, activation, beta, dataset, mean, std,
        image_size, in_channels, the training step and the checkpoint path.

    Raises:
        ConfigError: not a checkpoint, an unreadable or corrupt file, meta lacking a field,
            or weights not matching it; one message naming the file and the expected format.
    """
    ckpt = resolve_checkpoint(path, which)
    meta = read_meta(ckpt)
    state, _ = read_safetensors(
        ckpt / "model.safetensors",
        flag="--checkpoint",
        expected=f"the weights of a {meta['model']} in safetensors format (`robattr train`)",
    )
    try:  # what read_meta cannot see, e.g. a Softplus beta <= 0
        model = build_model(meta["model"], meta["num_classes"], meta["activation"], meta["beta"])
    except ConfigError as exc:
        raise ConfigError(
            f"--checkpoint {ckpt / 'meta.json'}: {exc}; expected the meta.json that "
            "`robattr train` writes"
        ) from None
    problem = state_dict_mismatch(model.state_dict(), state)
    if problem:
        raise ConfigError(
            f"--checkpoint {ckpt / 'model.safetensors'}: weights do not match the "
            f"{meta['model']} of meta.json ({problem}); expected the weights `robattr train` "
            "saved beside that meta.json"
        )
    model.load_state_dict(state)
    meta = {**meta, "checkpoint": str(ckpt)}
    return model.to(device).eval(), meta
