"""Missing weights without network: one line naming the file and where to get it, and no
download attempted (issue 18, item 4); no message ever advises `weights_only=False`."""

import argparse
import socket
import time

import pytest
import torch

from labshared import offline
from labshared.clip import create_clip
from labshared.clip_weights import fetch_weights
from labshared.errors import ConfigError
from labshared.runs import read_torch_file

OPTS = ("--backbone", "--pretrained")


@pytest.fixture
def no_network(monkeypatch):
    """HF offline mode unset and every connection refused; any download attempt fails
    the test. Returns the hosts the probe tried."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "HF_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    tried = []

    def refuse(address, *args, **kwargs):
        tried.append(address)
        raise OSError("Network is unreachable")

    def no_download(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr("open_clip.download_pretrained", no_download)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    return tried


def test_uncached_clip_tag_without_network_is_one_line(no_network, tmp_path):
    with pytest.raises(ConfigError) as err:
        create_clip("ViT-B-32", "openai", cache_dir=str(tmp_path), option_names=OPTS)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("--backbone ViT-B-32 --pretrained openai: the weights are not")
    assert "huggingface.co cannot be reached" in message
    assert "timm/vit_base_patch32_clip_224.openai" in message  # where to get them
    assert "--pretrained PATH --quick-gelu on" in message  # and how to pass them
    assert no_network == [("huggingface.co", 443)]


def test_hf_offline_mode_answers_without_probing(no_network, monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ConfigError, match=r"\(HF_HUB_OFFLINE is set\); fetch"):
        fetch_weights("ViT-B-32", "openai", cache_dir=str(tmp_path), option_names=OPTS)
    assert no_network == []


def test_a_cached_tag_needs_no_network(no_network, tmp_path):
    """The hub cache's layout (models--org--repo/snapshots/<rev>/file, refs/main)."""
    repo = tmp_path / "models--timm--vit_base_patch32_clip_224.openai"
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "open_clip_model.safetensors").write_bytes(b"weights")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    path = fetch_weights("ViT-B-32", "openai", cache_dir=str(tmp_path), option_names=OPTS)
    assert path == str(snapshot / "open_clip_model.safetensors")
    assert no_network == []
    assert fetch_weights("ViT-B-32", "random") is None  # nothing to fetch


def test_a_probe_that_hangs_is_abandoned(monkeypatch):
    """Name resolution has no timeout of its own: the probe's thread is given up on."""
    monkeypatch.setattr(offline, "PROBE_SECONDS", 0.05)

    def hang(*args, **kwargs):
        time.sleep(1)
        raise OSError("timed out")

    monkeypatch.setattr(socket, "create_connection", hang)
    assert offline.download_blocked("https://example.org/w.bin") == (
        "example.org cannot be reached"
    )


def test_proxy_is_probed_instead_of_the_host(no_network, monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.local:3128")
    reason = offline.download_blocked("https://download.pytorch.org/models/x.pth")
    assert reason == "download.pytorch.org cannot be reached (through the proxy proxy.local:3128)"
    assert no_network == [("proxy.local", 3128)]


def test_torchvision_weights_without_network(no_network, tmp_path, monkeypatch):
    from tldr_cli.classifier import build_classifier

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(ConfigError) as err:
        build_classifier("resnet50", 2, "IMAGENET1K_V1")
    message = str(err.value)
    assert "\n" not in message and "download.pytorch.org cannot be reached" in message
    assert "https://download.pytorch.org/models/resnet50-0676ba61.pth" in message
    assert "--backbone-weights PATH" in message


class Opaque:  # pickled below: a weights-only load must refuse it
    pass


@pytest.mark.parametrize("kind", ["garbage", "object", "namespace", "truncated"])
def test_no_message_suggests_weights_only_false(kind, tmp_path):
    path = tmp_path / f"{kind}.pt"
    if kind == "garbage":
        path.write_text("garbage\n")
    elif kind == "object":
        torch.save({"a": Opaque()}, path)
    elif kind == "namespace":  # an old training script's checkpoint: args beside weights
        torch.save({"args": argparse.Namespace(lr=1), "w": torch.zeros(2)}, path)
    else:
        torch.save({"w": torch.zeros(100)}, path)
        path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ConfigError) as err:
        read_torch_file(path, flag="--phi", expected="a phi checkpoint")
    message = str(err.value)
    assert message.startswith(f"--phi {path}: not a readable torch checkpoint (")
    assert "weights_only" not in message and "\n" not in message
    expected = {
        "garbage": "not a pickle of tensors and plain containers as torch.save writes",
        "object": f"it pickles a Python object ({__name__}.Opaque)",
        "namespace": "it pickles a Python object (argparse.Namespace)",
        "truncated": "PytorchStreamReader failed reading zip archive",
    }[kind]
    assert expected in message


def test_clip_checkpoint_file_errors_drop_the_advice(tmp_path):
    path = tmp_path / "clip.pt"
    torch.save({"args": argparse.Namespace(lr=1)}, path)
    with pytest.raises(ConfigError) as err:
        create_clip("tiny-clip-toy", path, option_names=OPTS)
    assert "argparse.Namespace" in str(err.value) and "weights_only" not in str(err.value)


def test_toy_eval_defaults_to_the_tiny_clip():
    from rtd_cli.commands.eval import eval_cmd

    def resolve_eval(flags):  # as `rtd eval` resolves its flags (finish hook included)
        return eval_cmd.config_spec.resolve(flags)[0]

    assert resolve_eval({"dataset": "toy", "phi": "p.pt"}).backbone == "tiny-clip-toy"
    assert resolve_eval({"dataset": "cirr", "phi": "p.pt"}).backbone == "ViT-B-32"
    given = resolve_eval({"dataset": "toy", "phi": "p.pt", "backbone": "ViT-L-14"})
    assert given.backbone == "ViT-L-14"
