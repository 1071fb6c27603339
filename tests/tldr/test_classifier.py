"""Classifier builders, checkpoints and transforms (no download: weights=None / local files)."""

import pytest
import torch
import torchvision

from labshared.errors import ConfigError
from tldr_cli.classifier import (
    build_classifier,
    classifier_transform,
    load_classifier,
    save_classifier,
)


def test_toy_cnn_features_are_post_relu_and_round_trip(tmp_path):
    torch.manual_seed(0)
    model = build_classifier("toy-cnn", 2).eval()
    x = torch.randn(3, 3, 32, 32)
    feats = model.forward_features(x)
    assert feats.shape == (3, 128) and (feats >= 0).all()
    torch.testing.assert_close(model(x), model.forward_head(feats))
    save_classifier(tmp_path / "ckpt", model, {"recipe": "toy"})
    again, meta = load_classifier(tmp_path / "ckpt")
    assert meta["arch"] == "toy-cnn" and meta["num_classes"] == 2
    torch.testing.assert_close(again(x), model(x))


def test_torchvision_resnet50_state_dict_is_loaded_strictly(tmp_path):
    torch.manual_seed(0)
    ref = torchvision.models.resnet50(weights=None, num_classes=2).eval()
    # a DataParallel-style checkpoint, as some released ERM models are saved
    torch.save({f"module.{k}": v for k, v in ref.state_dict().items()}, tmp_path / "erm.pt")
    model, meta = load_classifier(tmp_path / "erm.pt")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x))
        assert model.forward_features(x).shape == (1, 2048)
    assert meta["num_classes"] == 2
    torch.save(
        {"fc.weight": torch.zeros(2, 2048), "fc.bias": torch.zeros(2), "conv9.w": torch.zeros(1)},
        tmp_path / "bad.pt",
    )
    with pytest.raises(ConfigError, match="not a torchvision ResNet-50"):
        load_classifier(tmp_path / "bad.pt")
    with pytest.raises(ConfigError, match="no model.safetensors"):
        load_classifier(tmp_path)


def test_transforms_follow_the_official_preprocessing():
    wb = classifier_transform("waterbirds", "resnet50")
    celeba = classifier_transform("celeba", "resnet50")
    assert "Resize(size=(256, 256)" in repr(wb) and "CenterCrop(size=(224, 224))" in repr(wb)
    assert repr(celeba).index("CenterCrop(size=(178, 178))") < repr(celeba).index("Resize(size=224")
    aug = classifier_transform("waterbirds", "resnet50", train=True, augment=True)
    assert "RandomResizedCrop" in repr(aug) and "RandomHorizontalFlip" in repr(aug)
    with pytest.raises(ConfigError, match="--backbone-weights 'IMAGENET9'"):
        build_classifier("resnet50", 2, "IMAGENET9")
