"""The image classifier f = h o phi whose last layer TLDR retrains.

- `resnet50`: torchvision ResNet-50, `fc` replaced by Linear(2048, C); phi is everything
  before `fc` (2048-d, post-ReLU average-pooled), as in `TLDR:models/model_factory.py` and
  DFR's `get_embed`. ImageNet initialisation by weights-enum name (IMAGENET1K_V1, which
  torchvision downloads once) or from a local file (offline).
- `toy-cnn`: a five-conv-layer CNN (about 10 MFLOPs per image) for 32 px toy images,
  128-d post-ReLU pooled features. It starts from a backbone pretrained on unbiased
  10-way digit classification of the toy world (cached), because a CNN trained from
  scratch on the biased toy data keeps almost no digit features (design.md), just as the
  real setting starts from ImageNet weights.

Checkpoints are run-folder checkpoints (`model.safetensors` + `meta.json` holding `arch`,
`num_classes` and `preprocess`), so a classifier rebuilds from its own folder and its
features are extracted with the transform it was trained with. Anything else given as
`--classifier` (a missing file, a folder without a checkpoint, a corrupt or truncated
file, a pickle holding more than tensors, a state dict of another network) is one
ConfigError naming the file and the expected format.

Transforms, by `preprocess` (recorded with the checkpoint; `config.ErmRecipe`):

- `dataset` (TLDR, `TLDR:datasets/dataset_factory.py`): Waterbirds/SpuCo/HF Resize(256,256)
  -> CenterCrop(224); CelebA CenterCrop(178) -> Resize(224); both ImageNet-normalised.
  Training without augmentation uses the same transform.
- `dfr` (DFR, `wb_data.py:get_transform_cub`, used by DFR for Waterbirds and CelebA alike):
  Resize(256,256) -> CenterCrop(224) of the full image at evaluation.
- Augmentation (the DFR recipes): RandomResizedCrop(224, scale (0.7, 1), ratio (3/4, 4/3))
  + horizontal flip, of the full image, as DFR's `get_transform_cub(train=True)`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torchvision import transforms as T
from torchvision.models import ResNet50_Weights, resnet50

from labshared.errors import ConfigError
from labshared.offline import download_blocked
from labshared.runs import (
    atomic_save_safetensors,
    atomic_write_json,
    read_safetensors,
    read_torch_file,
)
from tldr_cli.nets import Classifier, ToyCNN
from tldr_cli.toybackbone import pretrained_toy_backbone

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TOY_MEAN = (0.5, 0.5, 0.5)
TOY_STD = (0.25, 0.25, 0.25)

CLASSIFIER_FORMAT = (
    "a `tldr erm` run folder or checkpoint folder (model.safetensors + meta.json), or a "
    "torchvision ResNet-50 state dict (.pt/.pth, or .safetensors) with fc.weight/fc.bias"
)
BACKBONE_FORMAT = "a torchvision ResNet-50 state dict (.pt/.pth/.bin, or .safetensors)"


@torch.no_grad()
def head_predictions(head: nn.Module, feats: torch.Tensor, batch_size: int = 65536) -> np.ndarray:
    """Predicted class of every row of `feats` (N, D) under a linear head (ERM's `fc`, a
    retrained TLDR head): (N,) int64, computed on the head's device in chunks."""
    device = next(head.parameters()).device
    out = [
        head(feats[i : i + batch_size].to(device)).argmax(1).cpu()
        for i in range(0, len(feats), batch_size)
    ]
    return torch.cat(out).numpy()


def _resnet50_backbone(weights: str | None) -> nn.Module:
    if weights is None or weights.lower() == "none":
        net = resnet50(weights=None)
    elif Path(weights).suffix in (".pth", ".pt", ".safetensors", ".bin"):
        net = resnet50(weights=None)
        state = _load_state_file(Path(weights), "--backbone-weights", BACKBONE_FORMAT)
        state = {k.removeprefix("module."): v for k, v in state.items()}
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        try:
            missing, unexpected = net.load_state_dict(state, strict=False)
        except RuntimeError as exc:  # right names, wrong shapes
            raise ConfigError(
                f"--backbone-weights {weights}: not a torchvision ResNet-50 state dict "
                f"({_first_line(exc)}); expected {BACKBONE_FORMAT}"
            ) from None
        if set(missing) - {"fc.weight", "fc.bias"} or unexpected:
            raise ConfigError(
                f"--backbone-weights {weights}: not a torchvision ResNet-50 state dict "
                f"(missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})"
            )
    else:
        try:
            enum = ResNet50_Weights[weights]
        except KeyError:
            raise ConfigError(
                f"--backbone-weights {weights!r}: expected a file, none, or one of "
                f"{', '.join(w.name for w in ResNet50_Weights)}"
            ) from None
        check_backbone_weights(weights)
        try:
            net = resnet50(weights=enum)
        except (OSError, RuntimeError) as exc:  # offline, or a broken download
            raise ConfigError(
                f"--backbone-weights {weights}: torchvision could not load the weights ({exc}); "
                "offline, pass a local ResNet-50 state-dict file instead"
            ) from None
    net.fc = nn.Identity()
    return net


def check_backbone_weights(weights: str | None) -> None:
    """A torchvision weights name (`IMAGENET1K_V1`) must be in torch's cache or
    downloadable now: offline, one error within seconds naming the file and its URL
    (torchvision would otherwise retry the connection). Files and `none` pass."""
    if weights is None or weights.lower() == "none" or weights not in ResNet50_Weights.__members__:
        return
    url = ResNet50_Weights[weights].url
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
    if cached.is_file():
        return
    if blocked := download_blocked(url):
        raise ConfigError(
            f"--backbone-weights {weights}: torchvision's ResNet-50 weights are not in the "
            f"local cache ({cached}) and cannot be downloaded now ({blocked}); fetch {url} "
            f"where there is network and put it there, or pass --backbone-weights PATH"
        )


def _load_state_file(path: Path, flag: str, expected: str) -> dict[str, torch.Tensor]:
    """A {name: tensor} state dict from a safetensors or torch file the user named.

    Torch files are read with weights_only=True; a checkpoint that wraps its weights
    under "state_dict" or "model" (common training-script layouts) is unwrapped.

    Raises:
        ConfigError: "<flag> <path>: <what is wrong>; expected <expected>" for a missing,
            unreadable or corrupt file, or one that does not hold a state dict.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        state, _ = read_safetensors(path, flag=flag, expected=expected)
        return state
    state = read_torch_file(path, flag=flag, expected=expected)
    if isinstance(state, dict):
        for key in ("state_dict", "model"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not state:
        raise ConfigError(
            f"{flag} {path}: holds a {type(state).__name__}, not a state dict; expected {expected}"
        )
    bad = next((k for k, v in state.items() if not isinstance(v, torch.Tensor)), None)
    if bad is not None:
        raise ConfigError(
            f"{flag} {path}: entry {bad!r} is a {type(state[bad]).__name__}, not a tensor; "
            f"expected {expected}"
        )
    return state


def build_classifier(
    arch: str, num_classes: int, backbone_weights: str | None = None
) -> Classifier:
    """A classifier ready for ERM: ImageNet (resnet50) or digit-pretrained (toy-cnn) phi,
    fresh head."""
    if arch == "resnet50":
        return Classifier(arch, _resnet50_backbone(backbone_weights), 2048, num_classes)
    if arch == "toy-cnn":
        model = Classifier(arch, ToyCNN(), ToyCNN.feature_dim, num_classes)
        if backbone_weights == "toy-digits":
            model.backbone.load_state_dict(pretrained_toy_backbone())
        elif backbone_weights not in (None, "none"):
            state = _load_state_file(
                Path(backbone_weights), "--backbone-weights", "a ToyCNN backbone state dict"
            )
            try:
                model.backbone.load_state_dict(state)
            except RuntimeError as exc:
                raise ConfigError(
                    f"--backbone-weights {backbone_weights}: not a ToyCNN backbone state dict "
                    f"({str(exc).splitlines()[0]})"
                ) from None
        return model
    raise ConfigError(f"--arch {arch!r}: expected resnet50 or toy-cnn")


# --------------------------------------------------------------------------- transforms
PREPROCESSES = ("dataset", "dfr")


def classifier_transform(
    dataset: str,
    arch: str,
    train: bool = False,
    augment: bool = False,
    preprocess: str = "dataset",
):
    """PIL image -> normalised tensor for the classifier (module docstring).

    Args:
        dataset: preprocessing family of the data, "celeba" or anything else
            (`pipeline.dataset_kind`).
        preprocess: "dataset" (TLDR's per-dataset transform) or "dfr" (DFR's full-image
            transform for every dataset).
    """
    if preprocess not in PREPROCESSES:
        raise ConfigError(f"preprocess {preprocess!r}: expected one of {', '.join(PREPROCESSES)}")
    if arch == "toy-cnn":
        return T.Compose([T.ToTensor(), T.Normalize(TOY_MEAN, TOY_STD)])
    norm = [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    if train and augment:
        return T.Compose(
            [T.RandomResizedCrop(224, scale=(0.7, 1.0)), T.RandomHorizontalFlip(), *norm]
        )
    if dataset == "celeba" and preprocess == "dataset":
        return T.Compose([T.CenterCrop(178), T.Resize(224), *norm])
    return T.Compose([T.Resize((256, 256)), T.CenterCrop(224), *norm])


# --------------------------------------------------------------------------- checkpoints
def save_classifier(folder: Path, model: Classifier, meta: dict) -> Path:
    folder = Path(folder)
    atomic_save_safetensors(folder / "model.safetensors", model.state_dict())
    atomic_write_json(
        folder / "meta.json",
        {
            "arch": model.arch,
            "num_classes": model.num_classes,
            "feature_dim": model.feature_dim,
            **meta,
        },
    )
    return folder


def load_classifier(path: str | Path, flag: str = "--classifier") -> tuple[Classifier, dict]:
    """A classifier from one of our checkpoint folders (or a run folder holding
    `checkpoints/final`), or from a torchvision ResNet-50 state-dict file (.pth/.pt/
    .safetensors; the class count is read from `fc.weight`).

    Raises:
        ConfigError: one line naming `flag`, the file and CLASSIFIER_FORMAT for anything
            that is not such a checkpoint (module docstring).
    """
    path = Path(path)
    if path.is_dir():
        for candidate in (path, path / "checkpoints" / "final"):
            if (candidate / "meta.json").is_file() or (candidate / "model.safetensors").is_file():
                return _load_checkpoint_folder(candidate, flag)
        raise ConfigError(
            f"{flag} {path}: folder holds no model.safetensors + meta.json (nor "
            f"checkpoints/final/); expected {CLASSIFIER_FORMAT}"
        )
    state = _load_state_file(path, flag, CLASSIFIER_FORMAT)
    state = {k.removeprefix("module."): v for k, v in state.items()}  # DataParallel checkpoints
    weight, bias = state.get("fc.weight"), state.get("fc.bias")
    if weight is None or bias is None or weight.ndim != 2 or bias.shape != weight.shape[:1]:
        raise ConfigError(
            f"{flag} {path}: no ResNet-50 head (fc.weight (C, 2048) and fc.bias (C,)); "
            f"expected {CLASSIFIER_FORMAT}"
        )
    model = build_classifier("resnet50", weight.shape[0], None)
    backbone = {k: v for k, v in state.items() if not k.startswith("fc.")}
    try:
        model.backbone.load_state_dict(backbone)
        model.fc.load_state_dict({"weight": weight, "bias": bias})
    except RuntimeError as exc:
        raise ConfigError(
            f"{flag} {path}: not a torchvision ResNet-50 state dict "
            f"({_first_line(exc)}); expected {CLASSIFIER_FORMAT}"
        ) from None
    return model.eval(), {"arch": "resnet50", "num_classes": model.num_classes, "source": str(path)}


def _first_line(exc: BaseException) -> str:
    """The informative line of an exception (load_state_dict's first line is a header)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].startswith("Error(s) in loading state_dict"):
        lines = lines[1:]
    return (lines[0] if lines else type(exc).__name__)[:200]


def _load_checkpoint_folder(folder: Path, flag: str) -> tuple[Classifier, dict]:
    """`model.safetensors` + `meta.json` (arch, num_classes) as `save_classifier` writes."""
    meta_path, weights = folder / "meta.json", folder / "model.safetensors"
    for needed in (meta_path, weights):
        if not needed.is_file():
            raise ConfigError(
                f"{flag} {folder}: {needed.name} is missing; expected {CLASSIFIER_FORMAT}"
            )
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"{flag} {meta_path}: not valid JSON ({_first_line(exc)}); expected the meta.json "
            "that `tldr erm` writes (arch, num_classes)"
        ) from None
    arch = meta.get("arch") if isinstance(meta, dict) else None
    n = meta.get("num_classes") if isinstance(meta, dict) else None
    if arch not in ("resnet50", "toy-cnn") or not isinstance(n, int) or n < 1:
        raise ConfigError(
            f"{flag} {meta_path}: fields 'arch' (resnet50 or toy-cnn) and 'num_classes' "
            f"(a positive integer) expected, got arch={arch!r}, num_classes={n!r}"
        )
    if meta.get("preprocess", "dataset") not in PREPROCESSES:
        raise ConfigError(
            f"{flag} {meta_path}: field 'preprocess' is {meta['preprocess']!r}; expected one "
            f"of {', '.join(PREPROCESSES)}"
        )
    state, _ = read_safetensors(weights, flag=flag, expected=CLASSIFIER_FORMAT)
    model = build_classifier(arch, n, None)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ConfigError(
            f"{flag} {weights}: weights do not fit the {arch} with {n} classes that meta.json "
            f"names ({_first_line(exc)})"
        ) from None
    return model.eval(), meta
