"""labshared.clip: the activation every (backbone, tag) gets, local files and their sidecars,
the errors, and the callers (rtd, tldr, the tiny CLIP) going through the one factory.

Nothing here downloads: tags are built with `load_weights=False` (on the `meta` device for
the module tree, on the CPU where the numbers matter)."""

from __future__ import annotations

import ast
import dataclasses
import json
from pathlib import Path

import open_clip
import pytest
import torch
from open_clip.transformer import QuickGELU
from torch import nn

from labshared import clip as C
from labshared import clip_weights as W
from labshared.errors import ConfigError
from labshared.tinyclip.model import (
    MODEL_CONFIG,
    TINY_CLIP_NAME,
    create_random_tiny_clip,
    save_tiny_clip,
)

# The architectures the tools support (rtd BACKBONES, tldr presets) and their QuickGELU
# twins, which open_clip lists separately.
SUPPORTED = ("ViT-B-32", "ViT-B-16", "ViT-L-14", "ViT-H-14", "ViT-bigG-14")
SUPPORTED_PAIRS = [
    (b, t)
    for b, t in open_clip.list_pretrained()
    if b in SUPPORTED or b.removesuffix("-quickgelu") in SUPPORTED
]

# Facts from the weights' provenance, written by hand (OpenAI CLIP and the LAION-400M
# ViT-B/32 runs used QuickGELU; LAION-2B runs and DataComp used GELU; MetaCLIP and DFN-2B
# used QuickGELU), so the test does not just restate open_clip's table.
HAND_FACTS = {
    ("ViT-B-32", "openai"): True,
    ("ViT-B-32", "laion400m_e32"): True,
    ("ViT-B-32", "laion2b_s34b_b79k"): False,
    ("ViT-B-32", "datacomp_xl_s13b_b90k"): False,
    ("ViT-B-16", "openai"): True,
    ("ViT-L-14", "openai"): True,
    ("ViT-L-14", "laion2b_s32b_b82k"): False,
    ("ViT-L-14", "dfn2b"): True,
    ("ViT-H-14", "laion2b_s32b_b79k"): False,
    ("ViT-H-14", "metaclip_fullcc"): True,
    ("ViT-bigG-14", "laion2b_s39b_b160k"): False,
    ("ViT-bigG-14", "metaclip_fullcc"): True,
}

TEST_ARCH = "clipfactory-test-vit"  # a small open_clip ViT that is not one of labshared's own
TEST_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 48, "heads": 4, "layers": 1},
}


@pytest.fixture(scope="module")
def test_arch(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("cfg")
    (root / f"{TEST_ARCH}.json").write_text(json.dumps(TEST_CFG))
    open_clip.add_model_config(root)
    return TEST_ARCH


def _acts(model: nn.Module) -> set[type]:
    return {type(m) for m in model.modules() if isinstance(m, (QuickGELU, nn.GELU))}


# --------------------------------------------------------------------------- every pair
def test_supported_pairs_cover_every_supported_backbone():
    names = {b for b, _ in SUPPORTED_PAIRS}
    assert set(SUPPORTED) <= names
    assert len(SUPPORTED_PAIRS) >= 60  # open_clip 3.3 lists 71; a shrinking table is a change
    assert set(HAND_FACTS) <= set(SUPPORTED_PAIRS)


@pytest.mark.parametrize("backbone, tag", open_clip.list_pretrained())
def test_decision_for_every_pretrained_pair(backbone, tag):
    """Every pair open_clip lists: the factory's choice is the tag's `quick_gelu`, or the
    architecture's own flag where the config already sets it (the -quickgelu names)."""
    tag_flag = bool(open_clip.get_pretrained_cfg(backbone, tag).get("quick_gelu", False))
    arch_flag = bool((open_clip.get_model_config(backbone) or {}).get("quick_gelu", False))
    assert W.tag_quick_gelu(backbone, tag) == (tag_flag or arch_flag)
    if backbone.removesuffix("-quickgelu") in SUPPORTED:
        assert W.tag_quick_gelu(backbone, tag) == tag_flag  # exactly the tag's config
    if (backbone, tag) in HAND_FACTS:
        assert W.tag_quick_gelu(backbone, tag) is HAND_FACTS[(backbone, tag)]


@pytest.mark.parametrize("backbone, tag", SUPPORTED_PAIRS)
def test_every_supported_pair_builds_with_the_tags_activation(backbone, tag):
    """The whole module tree through `create_clip` (on `meta`: no memory, no download),
    checked by the class of every activation module in both towers."""
    bundle = C.create_clip(backbone, tag, load_weights=False, device="meta")
    expected = bool(open_clip.get_pretrained_cfg(backbone, tag).get("quick_gelu", False))
    assert bundle.info.quick_gelu is expected
    assert bundle.info.kind == "tag" and bundle.info.weights == tag
    want, other = (QuickGELU, nn.GELU) if expected else (nn.GELU, QuickGELU)
    for tower in (bundle.model.visual, bundle.model.transformer):
        acts = _acts(tower)
        assert want in acts and other not in acts, (tower.__class__.__name__, acts)
    mean = open_clip.get_pretrained_cfg(backbone, tag)["mean"]
    assert bundle.preprocess.transforms[-1].mean == tuple(mean)


def test_real_vit_b32_random_weights_differ_only_by_the_activation():
    """End to end on the CPU: a random ViT-B/32 built for the `openai` tag has QuickGELU in
    every block; the pre-fix construction (`open_clip.create_model("ViT-B-32")`, what a
    LAION-2B tag also gets) has GELU and, with the same weights, other text features."""
    torch.manual_seed(0)
    openai = C.create_clip("ViT-B-32", "openai", load_weights=False)
    old = open_clip.create_model("ViT-B-32").eval()
    old.load_state_dict(openai.model.state_dict())
    assert _acts(openai.model) == {QuickGELU} and _acts(old) == {nn.GELU}
    n_blocks = len(openai.model.transformer.resblocks) + len(
        openai.model.visual.transformer.resblocks
    )
    assert sum(isinstance(m, QuickGELU) for m in openai.model.modules()) == n_blocks == 24
    ids = openai.tokenizer(["a photo of a cat", "a diagram"])
    with torch.no_grad():
        quick, gelu = openai.model.encode_text(ids), old.encode_text(ids)
    assert (quick - gelu).abs().max() > 1e-3


# --------------------------------------------------------------------------- errors
def test_unknown_tag_lists_the_backbones_tags():
    with pytest.raises(ConfigError) as err:
        C.create_clip("ViT-bigG-14", "openai", option_names=("--backbone", "--pretrained"))
    msg = str(err.value)
    assert msg.startswith("--pretrained 'openai' is unknown; known: ")
    assert "(the open_clip tags of ViT-bigG-14; or a local checkpoint file" in msg
    assert "laion2b_s39b_b160k" in msg and "metaclip_fullcc" in msg
    with pytest.raises(ConfigError, match="did you mean 'openai'"):
        C.create_clip("ViT-B-32", "opnai")


def test_unknown_backbone_lists_known_names_and_the_closest():
    with pytest.raises(ConfigError) as err:
        C.create_clip("ViT-B-23", "openai", option_names=("--clip-model", "--clip-pretrained"))
    msg = str(err.value)
    assert msg.startswith("--clip-model 'ViT-B-23' is unknown; known: ")
    assert "did you mean 'ViT-B-32'" in msg and "ViT-bigG-14" in msg and "tiny-clip-toy" in msg
    assert msg.endswith("(open_clip architectures; also hf-hub:ORG/REPO, local-dir:PATH)")


@pytest.mark.parametrize(
    "backbone, tag, flag",
    [("ViT-bigG-14", "laion2b_s39b_b160k", "off"), ("ViT-L-14", "openai", "on")],
)
def test_offline_without_cached_weights_says_to_pass_a_local_file(tmp_path, backbone, tag, flag):
    """HF_HUB_OFFLINE=1 (tests/conftest.py) and an empty cache folder: no network use."""
    with pytest.raises(ConfigError) as err:
        C.create_clip(
            backbone, tag, cache_dir=str(tmp_path), option_names=("--backbone", "--pretrained")
        )
    msg = str(err.value)
    assert f"--backbone {backbone} --pretrained {tag}: the weights are not in the local" in msg
    assert f"pass the file: --pretrained PATH --quick-gelu {flag}" in msg
    hub = open_clip.get_pretrained_cfg(backbone, tag)["hf_hub"].rstrip("/")
    assert f"fetch open_clip_model.safetensors from the hub repository {hub}" in msg


def test_a_flag_contradicting_a_tag_is_refused():
    with pytest.raises(ConfigError, match="trained with QuickGELU; --quick-gelu off"):
        C.create_clip("ViT-B-32", "openai", quick_gelu=False, load_weights=False, device="meta")
    agree = C.create_clip("ViT-B-32", "openai", quick_gelu=True, load_weights=False, device="meta")
    assert agree.info.quick_gelu is True


def test_missing_file_and_bad_file(tmp_path, test_arch):
    with pytest.raises(ConfigError, match="does not exist; expected a checkpoint file"):
        C.create_clip(test_arch, str(tmp_path / "w.safetensors"))
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match=r"bad.pt: not a loadable open_clip checkpoint"):
        C.create_clip(test_arch, bad, quick_gelu=False)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.* deprecation notes
def test_torchscript_archive_is_refused_with_what_to_use_instead(tmp_path, test_arch):
    """OpenAI's own .pt files are TorchScript archives, which weights-only loading cannot
    read; the error says so instead of an unpickler message."""
    path = tmp_path / "ViT-B-32.pt"
    torch.jit.save(torch.jit.script(nn.Linear(2, 2)), str(path))
    with pytest.raises(ConfigError, match="a TorchScript archive .OpenAI's release format."):
        C.create_clip(test_arch, path, quick_gelu=True)


# --------------------------------------------------------------------------- local files
def _save_random(path: Path, backbone: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = C.create_clip(backbone, "random").model
    torch.save(model.state_dict(), path)
    return model


def test_local_file_flag_sidecar_and_fallback(tmp_path, test_arch, capsys):
    weights = tmp_path / "ckpt.pt"
    saved = _save_random(weights, test_arch)
    side = W.sidecar_path(weights)
    assert side.name == "ckpt.pt.clip.json"

    # nothing recorded: the architecture default, said in the log
    first = C.create_clip(test_arch, weights)
    assert first.info.quick_gelu is False and not side.exists()
    assert "no activation recorded" in capsys.readouterr().err
    for k, v in saved.state_dict().items():  # and the weights really are the file's
        assert torch.equal(first.model.state_dict()[k], v), k

    # the flag decides and is recorded beside the file
    on = C.create_clip(test_arch, weights, quick_gelu=True)
    assert on.info.quick_gelu is True and _acts(on.model) == {QuickGELU}
    record = json.loads(side.read_text())
    assert record["quick_gelu"] is True and record["backbone"] == test_arch
    assert record["sha256"] == on.info.sha256 == W.file_sha256(weights)

    # the next run without the flag reads the record, silently
    again = C.create_clip(test_arch, weights)
    assert again.info.quick_gelu is True and again.info.quick_gelu_source.startswith("sidecar")
    assert "no activation recorded" not in capsys.readouterr().err

    # a contradicting flag wins for this run, warns, and leaves the record alone
    off = C.create_clip(test_arch, weights, quick_gelu=False)
    assert off.info.quick_gelu is False and _acts(off.model) == {nn.GELU}
    assert "overrides" in capsys.readouterr().err
    assert json.loads(side.read_text())["quick_gelu"] is True

    # a rewritten file no longer matches its record: ignored, with a warning
    _save_random(weights, test_arch, seed=1)
    stale = C.create_clip(test_arch, weights)
    assert stale.info.quick_gelu is False
    assert "records a different file" in capsys.readouterr().err


def test_malformed_sidecar_names_the_file_and_field(tmp_path, test_arch):
    weights = tmp_path / "w.pt"
    _save_random(weights, test_arch)
    W.sidecar_path(weights).write_text(json.dumps({"quick_gelu": "yes"}))
    with pytest.raises(ConfigError, match=r"w.pt.clip.json: field 'quick_gelu' must be true"):
        C.create_clip(test_arch, weights)
    W.sidecar_path(weights).write_text("{")
    with pytest.raises(ConfigError, match="not valid JSON"):
        C.create_clip(test_arch, weights)


def test_cache_identity_is_content_and_activation_not_path(tmp_path, test_arch):
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    _save_random(a, test_arch)
    b.write_bytes(a.read_bytes())
    ia = C.create_clip(test_arch, a, quick_gelu=True).info.cache_identity()
    ib = C.create_clip(test_arch, b, quick_gelu=True).info.cache_identity()
    assert (
        ia
        == ib
        == {
            "backbone": test_arch,
            "weights": {"sha256": W.file_sha256(a)},
            "quick_gelu": True,
        }
    )
    tag = C.create_clip("ViT-B-32", "openai", load_weights=False, device="meta").info
    assert tag.cache_identity() == {"backbone": "ViT-B-32", "weights": "openai", "quick_gelu": True}
    # open_clip accepts other spellings of a tag; the identity keeps its own
    spelled = C.create_clip("ViT-bigG-14", "LAION2B-S39B-B160K", load_weights=False, device="meta")
    assert spelled.info.weights == "laion2b_s39b_b160k"


def test_published_checksums_name_their_tags():
    """OpenAI URLs carry the full SHA-256, open_clip releases its first 8 hex digits."""
    openai_b32 = "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af"
    assert W.tag_for_digest("ViT-B-32", openai_b32) == "openai"
    assert W.tag_for_digest("ViT-B-32-quickgelu", openai_b32) == "openai"
    assert W.tag_for_digest("ViT-B-32", "46683a32" + "0" * 56) == "laion400m_e32"
    assert W.tag_for_digest("ViT-L-14", openai_b32) is None  # another architecture's file
    assert W.tag_for_digest("ViT-B-32", "0" * 64) is None


def test_schema_backbone_takes_the_folders_config(tmp_path, test_arch):
    folder = tmp_path / "repo"
    folder.mkdir()
    model = _save_random(folder / "open_clip_pytorch_model.bin", test_arch)
    cfg = {**TEST_CFG, "quick_gelu": True}
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg}))
    bundle = C.create_clip(f"local-dir:{folder}")
    assert bundle.info.quick_gelu is True and _acts(bundle.model) == {QuickGELU}
    assert bundle.info.sha256 is not None
    for k, v in model.state_dict().items():
        assert torch.equal(bundle.model.state_dict()[k], v), k
    with pytest.raises(ConfigError, match="brings its own weights"):
        C.create_clip(f"local-dir:{folder}", "openai")


# --------------------------------------------------------------------------- the tiny CLIP
def test_tiny_clip_config_is_the_packaged_json_and_goes_through_the_factory(tmp_path):
    path = C.MODEL_CONFIG_DIR / "tiny-clip-toy.json"
    assert json.loads(path.read_text()) == MODEL_CONFIG
    assert "tiny-clip-toy" in C.own_model_names() and "tiny-clip-toy" in open_clip.list_models()
    model = create_random_tiny_clip(seed=5)
    weights = save_tiny_clip(model, tmp_path / "tiny.safetensors")
    bundle = C.create_clip(TINY_CLIP_NAME, weights)
    # labshared's own architecture: its config decides, nothing is written beside the file
    assert bundle.info.quick_gelu_source == "labshared architecture config"
    assert not W.sidecar_path(weights).exists()
    assert bundle.tokenizer(["a red seven"]).shape == (1, 16)
    for k, v in model.state_dict().items():
        assert torch.equal(bundle.model.state_dict()[k], v), k


@pytest.mark.parametrize("module", [C, W], ids=["clip", "clip_weights"])
def test_clip_module_imports_no_tool_code_and_nothing_inside_functions(module):
    """No import cycle with tinyclip (nor between the factory and its weight sources: the
    factory uses them, never the reverse), and none dodged by function-level imports."""
    tree = ast.parse(Path(module.__file__).read_text())
    top = {
        n.module if isinstance(n, ast.ImportFrom) else a.name
        for n in tree.body
        if isinstance(n, ast.Import | ast.ImportFrom)
        for a in n.names
    }
    assert not any("tinyclip" in (m or "") for m in top)
    assert "labshared.clip" not in top
    nested = [
        n
        for f in ast.walk(tree)
        if isinstance(f, ast.FunctionDef)
        for n in ast.walk(f)
        if isinstance(n, ast.Import | ast.ImportFrom)
    ]
    assert nested == []


# --------------------------------------------------------------------------- callers
def test_rtd_feature_cache_key_holds_the_activation():
    from rtd_cli import features

    assert features.FEATURES_VERSION >= 2
    base = C.ClipInfo("ViT-B-32", "openai", "tag", None, True, "tag")
    assert features.weights_id(base)["quick_gelu"] is True
    flipped = dataclasses.replace(base, quick_gelu=False)
    assert features.weights_id(base) != features.weights_id(flipped)
    assert features.weights_id(dataclasses.replace(base, kind="random")) is None


def test_rtd_backbone_without_default_weights_names_its_tags():
    from rtd_cli.model import build_clip_bundle

    with pytest.raises(ConfigError, match="--backbone ViT-B-16 has no default weights") as err:
        build_clip_bundle("ViT-B-16", None)
    assert "laion2b_s34b_b88k" in str(err.value)


def test_tldr_clip_ident_holds_activation_and_version(tmp_path):
    from tldr_cli.config import PRESETS
    from tldr_cli.pipeline import CLIP_CACHE_VERSION, load_clip

    weights = save_tiny_clip(create_random_tiny_clip(seed=2), tmp_path / "tiny.safetensors")
    cfg = dataclasses.replace(PRESETS["toy"], clip_pretrained=str(weights))
    handle = load_clip(cfg, torch.device("cpu"))
    assert handle.ident == {**handle.info.cache_identity(), "version": CLIP_CACHE_VERSION}
    assert CLIP_CACHE_VERSION >= 2
    forced = load_clip(dataclasses.replace(cfg, quick_gelu=True), torch.device("cpu"))
    assert forced.ident["quick_gelu"] is True and handle.ident["quick_gelu"] is False
    assert _acts(forced.model) == {QuickGELU}


# --------------------------------------------------------------------------- CLI flags
def test_rtd_cli_quick_gelu_flag_reaches_the_configs(tmp_path):
    from typer.testing import CliRunner

    from rtd_cli.cli import app

    runner = CliRunner()
    phi = tmp_path / "phi.pt"
    phi.write_bytes(b"")
    for args, field in (
        (["eval", "--dataset", "toy", "--phi", str(phi), "--quick-gelu", "on"], True),
        (["eval", "--dataset", "toy", "--phi", str(phi), "--quick-gelu", "OFF"], False),
        (["eval", "--dataset", "toy", "--phi", str(phi)], None),
        (["train-phi", "--preset", "toy", "--quick-gelu", "on"], True),
        (["train", "--preset", "toy", "--phi", str(phi), "--quick-gelu", "off"], False),
    ):
        result = runner.invoke(app, [*args, "--dry-run"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["config"]["quick_gelu"] is field, args
    bad = runner.invoke(app, ["train-phi", "--preset", "toy", "--quick-gelu", "maybe"])
    assert bad.exit_code == 2


def test_tldr_cli_quick_gelu_flag_reaches_the_config(tmp_path, monkeypatch):
    """`tldr filter` with the heavy step replaced: the config it receives holds the flag."""
    from typer.testing import CliRunner

    import tldr_cli.filter
    from tldr_cli.cli import app
    from tldr_cli.wordimport import builtin_path

    seen = {}

    def fake_run_filter(cfg, runtime, run_dir, **kwargs):
        seen["cfg"] = cfg
        empty = {"classes": {}, "spurious": {}}
        stats = {"before": empty, "after": empty, "removed_stage1": 0, "removed_stage2": 0}
        return run_dir / "wordlists.json", stats, None

    monkeypatch.setattr(tldr_cli.filter, "run", fake_run_filter)
    args = ["filter", "--words", str(builtin_path("toy")), "--device", "cpu"]
    for flag, value in (("on", True), ("off", False), (None, None)):
        extra = ["--quick-gelu", flag] if flag else []
        out = tmp_path / f"run-{flag}"
        result = CliRunner().invoke(app, [*args, *extra, "-o", str(out)])
        assert result.exit_code == 0, result.output
        assert seen["cfg"].quick_gelu is value
