"""Fixtures shared by rtd's hot-path tests."""

import json
from types import SimpleNamespace

import open_clip
import pytest
import torch

from rtd_cli import model as M


@pytest.fixture(scope="session")
def tiny77(tmp_path_factory):
    """A random-weight open_clip model config with the real 77-token context (so a batch
    cut to its last EOT has something to cut), registered by name, and a random LinCIR phi
    for it. Returns (name, cfg, phi path)."""
    name = "rtd-tiny77"
    cfg = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 48, "heads": 4,
                     "layers": 2},
    }  # fmt: skip
    root = tmp_path_factory.mktemp("rtd-tiny77")
    (root / f"{name}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(root)
    phi = root / "phi.pt"
    torch.manual_seed(0)
    M.save_projection(phi, M.build_projection("lincir", 32, 48), "lincir")
    return SimpleNamespace(name=name, cfg=cfg, phi=phi)
