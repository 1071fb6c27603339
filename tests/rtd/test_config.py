"""rtd presets (named for what they are, correct default tags, the toy preset untouched) and
the one default prompt per base shared by `rtd train` and `rtd eval`."""

import json
import re
from pathlib import Path

import open_clip
import pytest
from typer.testing import CliRunner

from labshared.config import resolve
from rtd_cli import config as C
from rtd_cli.cli import app
from rtd_cli.commands.eval import default_prompt_style as eval_default
from rtd_cli.projection import BASES, prompt_for
from rtd_cli.projection import default_prompt_style as base_default
from rtd_cli.rtd_step import prompt_style as train_prompt_style

RTD_CLI = Path(__file__).resolve().parents[2] / "rtd-cli"
runner = CliRunner()


def _resolve(presets, name, **kw):
    if presets is C.TRAIN_PRESETS:
        required, validate = {"phi": "phi.pt", "triplets": "t.json"}, C.validate_train
    else:
        required, validate = {"captions": "c.txt"}, C.validate_phi
    return resolve(presets, name, {**required, **kw}, validate=validate)


# --------------------------------------------------------------------------- presets
@pytest.mark.parametrize(
    "presets,name",
    [(C.TRAIN_PRESETS, n) for n in C.TRAIN_PRESETS] + [(C.PHI_PRESETS, n) for n in C.PHI_PRESETS],
)
def test_every_preset_resolves_and_names_its_backbone(presets, name):
    cfg = _resolve(presets, name)
    if name == "toy":
        assert cfg.backbone == "tiny-clip-toy"
        return
    # the name says the backbone: rtd-vit-l14 -> ViT-L-14, lincir-vit-bigg14 -> ViT-bigG-14
    # (a trailing -ddp4 names the process layout)
    tail = name.split("-vit-")[1].split("-")[0]
    assert cfg.backbone.replace("-", "").lower() == f"vit{tail}"
    # the tag is one open_clip knows for that architecture
    assert (cfg.backbone, cfg.pretrained) in open_clip.list_pretrained()


def test_default_tags_are_the_ones_the_papers_used():
    tags = {n: (c.backbone, c.pretrained) for n, c in C.TRAIN_PRESETS.items() if n != "toy"}
    assert tags == {
        "rtd-vit-l14": ("ViT-L-14", "openai"),
        "rtd-vit-l14-ddp4": ("ViT-L-14", "openai"),
        "rtd-vit-b32": ("ViT-B-32", "openai"),
        "rtd-vit-bigg14": ("ViT-bigG-14", "laion2b_s39b_b160k"),  # LinCIR's bigG
    }
    assert C.PHI_PRESETS["lincir-vit-bigg14"].pretrained == "laion2b_s39b_b160k"
    assert ("ViT-bigG-14", "laion2b_s39b_b160k") in open_clip.list_pretrained()


def test_the_official_rtd_run_is_vit_l14_with_the_readme_values():
    cfg = C.TRAIN_PRESETS["rtd-vit-l14"]
    assert (cfg.backbone, cfg.steps, cfg.batch_size, cfg.lr, cfg.weight_decay) == (
        "ViT-L-14", 2000, 128, 1e-5, 0.01)  # fmt: skip
    assert (cfg.noise_scale, cfg.tau, cfg.seed, cfg.max_grad_norm) == (0.5, 0.07, 12345, None)
    for other in ("rtd-vit-b32", "rtd-vit-bigg14"):  # ours: the same values, other backbone
        o = C.TRAIN_PRESETS[other]
        assert (o.steps, o.batch_size, o.lr, o.noise_scale, o.tau, o.seed) == (
            2000, 128, 1e-5, 0.5, 0.07, 12345)  # fmt: skip


def test_each_preset_names_the_process_count_it_was_designed_for():
    """rtd-vit-l14 is one process (the official ranks never averaged gradients); -ddp4 is
    the same config on 4 averaged processes; LinCIR's run is 8 x 64 through DDP."""
    assert set(C.TRAIN_PRESET_PROCESSES) == set(C.TRAIN_PRESETS)
    assert set(C.PHI_PRESET_PROCESSES) == set(C.PHI_PRESETS)
    assert C.TRAIN_PRESET_PROCESSES["rtd-vit-l14"] == 1
    assert C.TRAIN_PRESET_PROCESSES["rtd-vit-l14-ddp4"] == 4
    assert C.TRAIN_PRESETS["rtd-vit-l14-ddp4"] == C.TRAIN_PRESETS["rtd-vit-l14"]
    assert {C.PHI_PRESET_PROCESSES[n] for n in C.PHI_PRESETS if n != "toy"} == {8}


def test_lincir_presets_are_the_readme_command():
    for name in ("lincir-vit-l14", "lincir-vit-bigg14", "lincir-vit-b32"):
        cfg = C.PHI_PRESETS[name]
        assert (cfg.steps, cfg.batch_size, cfg.lr, cfg.weight_decay, cfg.seed) == (
            20000, 64, 1e-4, 0.01, 12345)  # fmt: skip
        assert (cfg.noise_scale, cfg.dropout) == (1.0, None)  # None: Phi's own 0.5


def test_the_toy_presets_keep_their_values():
    """The toy demo depends on these (another engineer reworks it later)."""
    toy = C.TRAIN_PRESETS["toy"]
    assert (toy.backbone, toy.pretrained, toy.triplets, toy.steps, toy.batch_size, toy.lr) == (
        "tiny-clip-toy", None, "toy", 60, 64, 1e-4)  # fmt: skip
    assert (toy.checkpoint_every, toy.val_every, toy.log_every, toy.seed) == (20, 20, 5, 12345)
    assert (toy.noise_scale, toy.tau, toy.weight_decay, toy.base) == (0.5, 0.07, 0.01, "lincir")
    phi = C.PHI_PRESETS["toy"]
    assert (phi.backbone, phi.pretrained, phi.captions, phi.steps, phi.batch_size, phi.lr) == (
        "tiny-clip-toy", None, "toy", 200, 128, 1e-3)  # fmt: skip
    assert (phi.keywords, phi.seed, phi.noise_scale, phi.checkpoint_every) == (
        "builtin", 0, 1.0, 100)  # fmt: skip


@pytest.mark.parametrize("command", ["train", "train-phi"])
def test_old_preset_names_say_what_replaced_them(command):
    old = "paper" if command == "train" else "lincir"
    res = runner.invoke(app, [command, "--preset", old, "--dry-run"])
    assert res.exit_code == 1 and "renamed" in res.output
    new = "rtd-vit-l14" if command == "train" else "lincir-vit-l14"
    assert new in res.output


def test_every_preset_named_in_the_makefile_and_readme_exists():
    names = set(C.TRAIN_PRESETS) | set(C.PHI_PRESETS)
    for doc in ("rtd.mk", "README.md"):
        used = set(re.findall(r"--preset ([\w.-]+)", (RTD_CLI / doc).read_text()))
        assert used and used <= names, (doc, used - names)


# --------------------------------------------------------------------------- prompts
@pytest.mark.parametrize("base", list(BASES))
def test_train_and_eval_default_to_the_same_prompt_per_base(base):
    cfg = _resolve(C.TRAIN_PRESETS, "rtd-vit-b32", base=base)
    style = train_prompt_style(cfg)
    assert style == eval_default(base) == base_default(base)
    template, symbol = prompt_for(base, "cirr", style)
    if base == "pic2word":  # its IM2TEXT learned '*' in its own prompt (official code)
        assert (template, symbol) == ("a photo of * , {mod}", "*")
    else:
        assert (template, symbol) == ("a photo of $ that {mod}", "$")


@pytest.mark.parametrize("base", list(BASES))
def test_eval_cli_resolves_that_prompt(base, tmp_path):
    res = runner.invoke(app, ["eval", "--dataset", "toy", "--base", base, "--phi", "p.pt",
                              "--dry-run"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["config"]["prompt"] == base_default(base)
    res = runner.invoke(app, ["eval", "--dataset", "toy", "--base", base, "--phi", "p.pt",
                              "--prompt", "rtd", "--dry-run"])  # fmt: skip
    assert json.loads(res.stdout)["config"]["prompt"] == "rtd"


def test_eval_replays_a_config_file_with_flags_on_top(tmp_path):
    """`rtd eval --config FILE`: the file's fields (lists, paths), then the flags given."""
    fields = {"dataset": "fashioniq", "phi": "p.pt", "parts": ["dress", "shirt"],
              "toy_queries": 7, "split": "val"}  # fmt: skip
    (tmp_path / "eval.json").write_text(json.dumps(fields))
    res = runner.invoke(app, ["eval", "--config", str(tmp_path / "eval.json"), "--split", "test",
                              "--dry-run"])  # fmt: skip
    assert res.exit_code == 0, res.output
    cfg = json.loads(res.stdout)["config"]
    assert (cfg["dataset"], cfg["phi"], cfg["parts"], cfg["toy_queries"]) == (
        "fashioniq", "p.pt", ["dress", "shirt"], 7)  # fmt: skip
    assert cfg["split"] == "test"  # the flag over the file
    assert (cfg["backbone"], cfg["prompt"]) == ("ViT-B-32", "rtd")  # completed as without it
    res = runner.invoke(app, ["eval", "--dataset", "toy", "--phi", "p.pt", "--decode", "gpx",
                              "--dry-run"])  # fmt: skip
    assert res.exit_code == 1 and "--decode" in res.output and "gpu" in res.output


# --------------------------------------------------------------------------- flags
# (that each flag reaches its config field: tests/shared/test_options_walk.py, every tool)
def test_seed_is_the_shared_option_everywhere():
    """--seed is labshared's one declaration (help and panel) in all three commands."""
    import typer

    commands = typer.main.get_command(app).commands
    helps = {c: next(p for p in commands[c].params if p.name == "seed").help
             for c in ("train", "train-phi", "eval")}  # fmt: skip
    assert len(set(helps.values())) == 1, helps
