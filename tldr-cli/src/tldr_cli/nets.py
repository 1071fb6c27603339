"""The networks of `tldr_cli.classifier`: the classifier f = h o phi (`Classifier`, with
timm-like seams) and the toy world's small CNN (`ToyCNN`)."""

from __future__ import annotations

import torch
from torch import nn


class ToyCNN(nn.Module):
    """32 px input -> (B, 128) post-ReLU average-pooled features."""

    feature_dim = 128

    def __init__(self) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            ]

        self.net = nn.Sequential(
            *block(3, 16), nn.MaxPool2d(2),  # 16 px
            *block(16, 32), *block(32, 32), nn.MaxPool2d(2),  # 8 px
            *block(32, 64), *block(64, 128), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Classifier(nn.Module):
    """phi (`backbone`) and the linear head (`fc`), with timm-like seams."""

    def __init__(self, arch: str, backbone: nn.Module, feature_dim: int, num_classes: int) -> None:
        super().__init__()
        self.arch, self.feature_dim, self.num_classes = arch, feature_dim, num_classes
        self.backbone = backbone
        self.fc = nn.Linear(feature_dim, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # (B, D) post-ReLU
        return self.backbone(x)

    def forward_head(self, feats: torch.Tensor) -> torch.Tensor:
        return self.fc(feats)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.backbone(x))

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.fc = nn.Linear(self.feature_dim, num_classes)
