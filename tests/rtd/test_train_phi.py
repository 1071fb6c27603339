"""rtd train-phi: keyword masking (built-in rule and the spaCy rule on a stand-in pipeline),
the LinCIR objective, the official checkpoint format, resume and the CLI."""

import json
import random
from pathlib import Path
from types import SimpleNamespace

import open_clip
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from labshared.config import resolve
from labshared.device import Precision, Runtime
from labshared.errors import ConfigError
from rtd_cli import config as C
from rtd_cli import model as M
from rtd_cli.cli import app
from rtd_cli.keywords import (
    KeywordMasker,
    clean_caption,
    ensure_slot,
    load_masker,
    mask_runs,
    split_tokens,
)
from rtd_cli.train_phi import masked_batch, train_phi

TINY = "rtd-phi-tiny"
CPU = Runtime(torch.device("cpu"), Precision("fp32", torch.float32, False), seed=0)


@pytest.fixture(scope="module", autouse=True)
def tiny_config(tmp_path_factory):
    root = tmp_path_factory.mktemp("cfg")
    cfg = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16},
        "text_cfg": {
            "context_length": 16,
            "vocab_size": 49408,
            "width": 48,
            "heads": 4,
            "layers": 2,
        },
    }
    (root / f"{TINY}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(root)


# --------------------------------------------------------------------------- keywords
def test_clean_caption_like_lincir():
    assert clean_caption("A <PERSON> holding $5 ") == "a person holding 5"
    assert clean_caption(None) == ""


def test_builtin_masks_keyword_runs_with_one_symbol_each():
    m = KeywordMasker("builtin")
    rng = random.Random(0)
    # the final "." is its own token, as spaCy's tokenizer makes it (issue 17: was dropped)
    assert m.mask("A photo of a red car on the street.", rng) == (
        "a photo of a red car on the street.", "$ of $ on $ .", True)  # fmt: skip
    assert m.mask("a red seven on grass", rng)[1] == "$ on $"
    # "a" inside words is untouched (LinCIR's str.replace would hit "grass" and "car").
    assert "$" not in m.mask("a cat", rng)[1].replace("$", "", 1)


def test_builtin_splits_punctuation_and_clitics_as_lincir_spacy_path():
    """LinCIR's own cases: the built-in rule gives the spaCy path's masks."""
    m = KeywordMasker("builtin")
    masks = {c: m.mask(c, random.Random(0))[1] for c in BUILTIN_CASES}
    assert masks == BUILTIN_CASES
    assert split_tokens('("don\'t")') == ["(", '"', "do", "n't", '"', ")"]
    assert split_tokens("t-shirt/cap") == ["t", "-", "shirt", "/", "cap"]
    assert split_tokens("e.g.,") == ["e.g.", ","] and split_tokens("3.5%") == ["3.5", "%"]


#: caption -> the built-in mask (the spaCy path's for the same tags)
BUILTIN_CASES = {
    "A dog.": "$ .",
    "A red car, on the street": "$ , on $",
    "the man's hat": "$ 's $",
    "A man's red car.": "$ 's $ .",
    "sitting on (grass)": "sitting on ( $ )",
    "she's wearing a black-and-white hat!": "she's wearing $ -and- $ !",
}

#: Captions whose tokens `spacy.blank("en")` and `split_tokens` must agree on.
TOKENIZER_CASES = [
    *BUILTIN_CASES, "Two dogs, a cat and a bird!", "don't can't won't i'm you're it's",
    "a t-shirt, well-known 20-year-old black/white cat", "e.g. a.m. mr. u.s.",
    '"hello" (world) [x] {y}', "wow!! what?! a... b…c", "dogs' toys 'quoted'",
    "3.5 10% 10:30 a+b 3-4", "x,y", "(don't) 'tis", "the cat's toy's colour",
    'ok?" "yes."', "<PERSON> is riding a bike; the sky is blue: clear",
    "a sign that says 'stop!'", "rock'n'roll o'neil", "a close-up of two people's hands.",
    "tree-lined street, 1960s.", "gonna cannot y'all ma'am", "hello-- -x x-", "1,000 people",
]  # fmt: skip


def test_builtin_tokens_are_spacy_blank_english_tokens():
    spacy = pytest.importorskip("spacy")
    nlp = spacy.blank("en")
    for caption in TOKENIZER_CASES:
        clean = clean_caption(caption)
        want = [(t.text, t.whitespace_) for t in nlp(clean)]
        assert [(t, ws) for t, ws, _ in KeywordMasker("builtin").pieces(clean)] == want, clean


def test_no_keyword_replaces_one_word_and_empty_falls_back():
    m = KeywordMasker("builtin", symbol="*")
    clean, masked, found = m.mask("it is on there", random.Random(1))
    assert not found and masked.count("*") == 1 and len(masked.split()) == 4
    assert m.mask("  $ ", random.Random(0)) == ("", "a photo of *", False)


def test_spacy_rule_on_a_stand_in_pipeline():
    """NOUN/PROPN/ADJ/DET runs, as `lincir:loader.py::extract_keywords_spacy`."""
    tags = {"a": "DET", "dog": "NOUN", "runs": "VERB", "on": "ADP", "green": "ADJ", "grass": "NOUN"}

    def nlp(text):
        words = text.split()
        return [SimpleNamespace(text=w, pos_=tags[w], whitespace_=" " if i < len(words) - 1 else "")
                for i, w in enumerate(words)]  # fmt: skip

    m = KeywordMasker("spacy", "$", nlp)
    assert m.mask("A dog runs on green grass", random.Random(0))[1] == "$ runs on $"


def test_mask_runs_keeps_whitespace_and_load_masker_errors():
    assert mask_runs([("a", " ", True), ("b", " ", True), ("c", "", False)], "$") == "$ c"
    assert load_masker("builtin").backend == "builtin"
    assert load_masker("auto").backend in ("builtin", "spacy")
    with pytest.raises(ConfigError, match="expected one of"):
        load_masker("nltk")
    try:
        import spacy  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match="--keywords builtin"):
            load_masker("spacy")


def test_masked_batch_is_a_function_of_seed_step_rank():
    m = KeywordMasker("builtin")
    caps = ["it is on there", "it was here", "a red car"]
    a = masked_batch(caps, m, seed=1, step=5, rank=0)
    assert a == masked_batch(caps, m, seed=1, step=5, rank=0)
    assert a[2] == pytest.approx(1 / 3)


# --------------------------------------------------------------------------- the slot
# The real CLIP BPE (bundled with open_clip, offline): "$" -> 259, but "$." is one token,
# "$," and "$'s" split into "$" (3, not 259) and the rest. Ids are looked up, not typed in.
BPE = open_clip.get_tokenizer("ViT-B-32")
DOLLAR = M.pseudo_token_id(BPE, "$")
STAR = M.pseudo_token_id(BPE, "*")


def _spacy_like(tagged: list[tuple[str, str, str]]):
    """A stand-in spaCy pipeline: `nlp(text)` yields tokens with `.text`, `.whitespace_` and
    `.pos_` exactly as spaCy splits punctuation and clitics off words (no whitespace
    between "car" and "." or "man" and "'s")."""

    def nlp(text):
        tokens = [SimpleNamespace(text=t, whitespace_=ws, pos_=pos) for t, ws, pos in tagged]
        assert "".join(t.text + t.whitespace_ for t in tokens) == text  # spaCy's invariant
        return tokens

    return nlp


SPACY_CASES = {  # caption -> spaCy tokens (text, whitespace after, POS)
    "a red car.": [("a", " ", "DET"), ("red", " ", "ADJ"), ("car", "", "NOUN"), (".", "", "PUNCT")],
    "a dog, on grass": [("a", " ", "DET"), ("dog", "", "NOUN"), (",", " ", "PUNCT"),
                        ("on", " ", "ADP"), ("grass", "", "NOUN")],
    "the man's hat": [("the", " ", "DET"), ("man", "", "NOUN"), ("'s", " ", "PART"),
                      ("hat", "", "NOUN")],
    "sitting on (grass)": [("sitting", " ", "VERB"), ("on", " ", "ADP"), ("(", "", "PUNCT"),
                           ("grass", "", "NOUN"), (")", "", "PUNCT")],
    "it sleeps on a bed": [("it", " ", "PRON"), ("sleeps", " ", "VERB"), ("on", " ", "ADP"),
                           ("a", " ", "DET"), ("bed", "", "NOUN")],
}  # fmt: skip


def test_the_bug_is_real_glued_punctuation_loses_the_slot():
    assert BPE.encode("$") == [DOLLAR] and BPE.encode("*") == [STAR]
    for glued in ("$.", "$,", "$'s", "($"):
        assert DOLLAR not in BPE.encode(glued), glued
    assert DOLLAR not in BPE.encode("*.") and STAR not in BPE.encode("*.")


@pytest.mark.parametrize("caption", list(SPACY_CASES))
def test_spacy_path_keeps_the_symbol_its_own_token(caption):
    masker = KeywordMasker("spacy", "$", _spacy_like(SPACY_CASES[caption]))
    _, masked, found = masker.mask(caption, random.Random(0))
    assert found
    ids, used, fell_back = ensure_slot(BPE, [masked], DOLLAR, "$")
    assert not fell_back.any() and used == [masked] and DOLLAR in ids[0].tolist(), masked


def test_spacy_path_exact_masks():
    def mask(caption, symbol="$"):
        return KeywordMasker("spacy", symbol, _spacy_like(SPACY_CASES[caption])).mask(
            caption, random.Random(0))[1]  # fmt: skip

    assert mask("a red car.") == "$ ."  # was "$." (one BPE token, 34682)
    assert mask("a dog, on grass") == "$ , on $"  # was "$, on $"
    assert mask("the man's hat") == "$ 's $"  # was "$'s $"
    assert mask("sitting on (grass)") == "sitting on ( $ )"
    assert mask("it sleeps on a bed") == "it sleeps on $"  # `$` at the end
    assert mask("a red car.", "*") == "* ."
    assert STAR in BPE.encode(mask("a red car.", "*"))


def test_mask_runs_spaces_the_symbol_only_where_text_touches_it():
    assert mask_runs([("(", "", False), ("x", "", True), (")", " ", False)], "$") == "( $ )"
    assert mask_runs([("x", "", True)], "$") == "$"
    assert mask_runs([("a", " ", False), ("x", "  ", True), ("b", "", False)], "$") == "a $  b"


def test_builtin_path_keeps_the_slot_with_punctuation():
    m = KeywordMasker("builtin")
    for caption in (
        "A red car.",
        "a dog, on grass",
        "the man's hat",
        "on (grass)",
        "it is on a bed",
    ):
        _, masked, _ = m.mask(caption, random.Random(0))
        assert DOLLAR in BPE.encode(masked), (caption, masked)


def test_over_long_captions_fall_back_on_both_paths():
    # The only keyword comes after the 77-token context: truncation cuts the slot off.
    caption = "it is on " * 30 + "a dog"
    builtin = KeywordMasker("builtin").mask(caption, random.Random(0))[1]
    words = caption.split()
    tagged = [(w, " " if i < len(words) - 1 else "", "DET" if w == "a" else
               "NOUN" if w == "dog" else "ADP") for i, w in enumerate(words)]  # fmt: skip
    spacy_path = KeywordMasker("spacy", "$", _spacy_like(tagged)).mask(caption, random.Random(0))[1]
    assert builtin.endswith("$") and spacy_path.endswith("$")
    ok = "$ on $"
    ids, used, fell_back = ensure_slot(BPE, [builtin, ok, spacy_path], DOLLAR, "$")
    assert fell_back.tolist() == [True, False, True]
    assert used == ["a photo of $", ok, "a photo of $"]
    assert ids.shape == (3, 77) and ((ids == DOLLAR).any(dim=1)).all()
    torch.testing.assert_close(ids[0], BPE(["a photo of $"])[0])
    torch.testing.assert_close(ids[1], BPE([ok])[0])


def test_ensure_slot_falls_back_on_a_merged_symbol_and_refuses_a_foreign_tokenizer():
    ids, used, fell_back = ensure_slot(BPE, ["$.", "$ ."], DOLLAR, "$")
    assert fell_back.tolist() == [True, False] and used == ["a photo of $", "$ ."]
    with pytest.raises(ConfigError, match="cannot be placed"):
        ensure_slot(BPE, ["$."], 12345, "$")


def test_real_spacy_tokenizer_when_installed():
    """spaCy's own tokenizer (blank English pipeline, POS set from a word list so that no
    model download is needed) glues no whitespace between a word and its punctuation."""
    spacy = pytest.importorskip("spacy")
    nlp = spacy.blank("en")
    tags = {"a": "DET", "red": "ADJ", "car": "NOUN", "man": "NOUN", "hat": "NOUN", "the": "DET"}

    @spacy.Language.component("rtd_test_pos")
    def set_pos(doc):
        for tok in doc:
            tok.pos_ = tags.get(tok.text, "PUNCT" if tok.is_punct else "PART")
        return doc

    nlp.add_pipe("rtd_test_pos")
    masker = KeywordMasker("spacy", "$", nlp)
    for caption, want in (("a red car.", "$ ."), ("the man's hat", "$ 's $")):
        masked = masker.mask(caption, random.Random(0))[1]
        assert masked == want and DOLLAR in BPE.encode(masked)


def test_real_spacy_model_when_installed():
    spacy = pytest.importorskip("spacy")
    try:
        masker = load_masker("spacy")
    except ConfigError:
        pytest.skip("en_core_web_sm is not installed")
    # captions whose tags are unambiguous: DET/ADJ/NOUN keywords, NUM, PART, PUNCT, CCONJ
    # and ADP not (LinCIR's extract_keywords_spacy)
    want = {
        "A dog.": "$ .",
        "A man's red car.": "$ 's $ .",
        "Two dogs, a cat and a bird!": "two $ , $ and $ !",
        "photo of a dog": "$ of $",
    }
    assert {c: masker.mask(c, random.Random(0))[1] for c in want} == want
    assert all(DOLLAR in BPE.encode(m) for m in want.values())
    assert spacy.__version__


# --------------------------------------------------------------------------- training
def phi_cfg(**kw) -> C.PhiConfig:
    base = dict(backbone=TINY, pretrained="random", captions="toy:40", steps=4, batch_size=8,
                checkpoint_every=2, log_every=1)  # fmt: skip
    base.update(kw)
    return resolve(C.PHI_PRESETS, "toy", base, validate=C.validate_phi)


def test_train_phi_lowers_the_lincir_mse_and_writes_official_format(tmp_path):
    torch.manual_seed(0)
    cfg = phi_cfg(steps=12, lr=3e-3)
    out = train_phi(cfg, tmp_path / "run", CPU)
    losses = [h["loss"] for h in out["history"]]
    assert out["step"] == 12 and losses[-1] < losses[0]
    ckpt = torch.load(out["phi"], weights_only=True)
    assert set(ckpt) == {"Phi"} and "layers.6.weight" in ckpt["Phi"]
    phi = M.load_projection(out["phi"], "lincir", in_dim=32, token_dim=48)
    # The objective recomputed independently (eval mode, no noise) on toy captions: the
    # trained phi beats a fresh one.
    from labshared.data.text_triplets import load_captions

    torch.manual_seed(0)  # the same random CLIP as the run
    clip_model, _, tok = M.build_clip(TINY, "random")
    tower = M.text_tower_from_clip(clip_model).eval()
    masker = KeywordMasker("builtin")
    caps = load_captions("toy:8").captions
    masked = [masker.mask(c, random.Random(0))[1] for c in caps]
    fresh = M.build_projection("lincir", 32, 48).eval()
    with torch.no_grad():
        e = tower(tok(caps))

        def mse(p):
            return F.mse_loss(tower(tok(masked), pseudo_tokens=p(e), pseudo_token_id=259), e).item()

        assert mse(phi) < mse(fresh)


def test_train_phi_resume_and_pic2word(tmp_path):
    torch.manual_seed(0)
    cfg = phi_cfg(base="pic2word")
    full = train_phi(cfg, tmp_path / "full", CPU)
    torch.manual_seed(0)
    assert train_phi(cfg, tmp_path / "cut", CPU, stop_after=2)["stopped"]
    torch.manual_seed(0)  # the same random CLIP
    resumed = train_phi(cfg, tmp_path / "cut", CPU, resume=True)
    assert resumed["loss"] == full["loss"]
    a = torch.load(full["phi"], weights_only=True)["state_dict_img2text"]
    b = torch.load(resumed["phi"], weights_only=True)["state_dict_img2text"]
    assert all(k.startswith("module.") for k in a)
    for k in a:  # bit for bit
        assert torch.equal(a[k], b[k]), k
    assert isinstance(M.load_projection(full["phi"], "pic2word"), M.Im2Text)


def test_cli_train_phi(tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["train-phi", "--dry-run", "--captions", "c.txt"])
    assert res.exit_code == 0
    cfg = json.loads(res.stdout)["config"]
    # the default preset is LinCIR's README run (ViT-L/14, 8 GPUs x 64, 20000 steps)
    assert (cfg["lr"], cfg["batch_size"], cfg["noise_scale"]) == (1e-4, 64, 1.0)
    assert (cfg["backbone"], cfg["steps"], cfg["seed"]) == ("ViT-L-14", 20000, 12345)
    res = runner.invoke(app, ["train-phi", "--preset", "toy", "--dropout", "1.5"])
    assert res.exit_code == 1 and "--dropout" in res.output
    out = tmp_path / "run"
    res = runner.invoke(app, ["train-phi", "--preset", "toy", "--backbone", TINY, "--pretrained",
                              "random", "--captions", "toy:20", "--steps", "2", "--batch-size",
                              "4", "--toy-seed", "3", "-o", str(out),
                              "--device", "cpu"])  # fmt: skip
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout[res.stdout.index("{") :])
    assert Path(summary["phi"]).is_file() and summary["keywords"] == "builtin"
    saved = json.loads((out / "config.json").read_text())
    assert (saved["tool"], saved["command"], saved["preset"]) == ("rtd", "train-phi", "toy")
    data = json.loads((out / "data.json").read_text())
    assert data["source"] == "toy:20 (toy seed 3)" and saved["config"]["toy_seed"] == 3


def _spacy_model_installed() -> bool:
    try:
        load_masker("spacy")
    except ConfigError:
        return False
    return True


def test_lincir_presets_insist_on_spacy_unless_builtin_is_passed(tmp_path):
    """A lincir preset without spaCy stops with one line saying how to install both;
    `--keywords builtin` runs and the header records it. Designed for 8 processes, a
    one-process run names its global batch."""
    out = tmp_path / "run"
    args = ["train-phi", "--preset", "lincir-vit-b32", "--backbone", TINY, "--pretrained",
            "random", "--captions", "toy:20", "--steps", "1", "--batch-size", "4",
            "--device", "cpu", "-o", str(out)]  # fmt: skip
    runner = CliRunner()
    if not _spacy_model_installed():
        res = runner.invoke(app, args)
        assert res.exit_code == 1 and not out.exists()
        line = " ".join(res.output.split())
        assert "pip install spacy && python -m spacy download en_core_web_sm" in line
        assert "--keywords builtin" in line
    res = runner.invoke(app, [*args, "--keywords", "builtin"])
    assert res.exit_code == 0, res.output
    saved = json.loads((out / "config.json").read_text())
    assert saved["preset"] == "lincir-vit-b32" and saved["config"]["keywords"] == "builtin"
    runtime = saved["runtime"]
    assert (runtime["global_batch"], runtime["gradients_averaged"]) == (4, False)
    assert runtime["preset_processes"] == 8
    assert (
        "preset lincir-vit-b32 is designed for 8 process(es) (global batch 32 = 8 x 4); this "
        "run has 1: global batch 4 = 1 x 4, one process; --batch-size 32 keeps the global "
        "batch" in " ".join(res.output.split())
    )
    assert C.PHI_PRESETS["lincir-vit-l14"].keywords == "spacy"


def test_cli_a_failed_check_leaves_no_folder_and_the_corrected_rerun_works(tmp_path):
    out = tmp_path / "run"
    args = ["train-phi", "--preset", "toy", "--backbone", TINY, "--pretrained", "random",
            "--steps", "2", "--batch-size", "4", "--device", "cpu", "-o", str(out)]  # fmt: skip
    runner = CliRunner()
    res = runner.invoke(app, [*args, "--captions", str(tmp_path / "missing.txt")])
    assert res.exit_code == 1 and "missing.txt" in res.output and not out.exists()
    res = runner.invoke(app, [*args, "--captions", "toy:20", "--keywords", "nltk"])
    assert res.exit_code == 1 and "--keywords" in res.output and not out.exists()
    res = runner.invoke(app, [*args, "--captions", "toy:20"])
    assert res.exit_code == 0, res.output
    assert json.loads((out / "metrics.json").read_text())["step"] == 2


def test_dropout_masks_come_from_the_run_generator_not_the_global_rng():
    """phi's dropout draws from the generator it was given: the same generator state gives
    the same masks whatever the global RNG does, and the global RNG is left untouched."""
    from rtd_cli.train_phi import ForkedDropout, fork_dropout

    phi = M.build_projection("lincir", 8, 12)
    fork_dropout(phi, torch.Generator().manual_seed(5))
    drops = [m for m in phi.modules() if isinstance(m, ForkedDropout)]
    assert len(drops) == 2 and all(d.p == 0.5 for d in drops)
    assert not any(isinstance(m, torch.nn.Dropout) for m in phi.modules())
    assert set(phi.state_dict()) == set(M.build_projection("lincir", 8, 12).state_dict())
    x = torch.randn(4, 8)
    phi.train()
    torch.manual_seed(0)
    a = phi(x)
    global_state = torch.get_rng_state()
    drops[0].generator.manual_seed(5)
    torch.manual_seed(123)
    b = phi(x)
    torch.testing.assert_close(a, b)
    torch.manual_seed(0)
    assert torch.equal(torch.get_rng_state(), global_state)  # phi(x) drew nothing from it
    assert not torch.equal(phi(x), a)  # the generator moved on: other masks
    phi.eval()
    torch.testing.assert_close(phi(x), phi(x))  # no dropout in eval mode
    im2text = M.build_projection("pic2word", 8, 12)
    fork_dropout(im2text, torch.Generator(), p=0.2)  # --dropout overrides the base's 0.1
    assert [m.p for m in im2text.modules() if isinstance(m, ForkedDropout)] == [0.2, 0.2]


def test_train_phi_counts_and_reports_slot_fallbacks(tmp_path):
    """The tiny tower's context is 16 tokens: a caption whose only keyword comes later loses
    its slot to truncation and trains on "a photo of $"; the run counts it."""
    long = "it is on there and it is on there and it is on there with a dog"
    assert len(long.split()) > 14
    captions = tmp_path / "caps.txt"
    captions.write_text("\n".join([long, "a red car on grass", long, "a dog on a bed"]))
    torch.manual_seed(0)
    cfg = phi_cfg(captions=str(captions), steps=3, batch_size=4, checkpoint_every=1)
    out = train_phi(cfg, tmp_path / "run", CPU)
    assert out["slot_fallbacks"] == 2 * 3  # both long captions in each of the 3 batches
    assert [h["slot_fallbacks"] for h in out["history"]] == [2, 4, 6]
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["slot_fallbacks"] == 6
    # resume carries the count on
    torch.manual_seed(0)
    train_phi(cfg, tmp_path / "cut", CPU, stop_after=1)
    torch.manual_seed(0)
    assert train_phi(cfg, tmp_path / "cut", CPU, resume=True)["slot_fallbacks"] == 6
