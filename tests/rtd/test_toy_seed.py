"""The toy world's data seed (`--toy-seed`, issue 9 item 6) reaches every rtd command that
draws toy data, stays apart from the training seed, and never mixes training data with the
benchmark."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from labshared import toy
from labshared.data.composed_retrieval import load_toy
from labshared.data.text_triplets import load_captions, load_text_triplets
from rtd_cli.cli import app
from rtd_cli.demo import DemoConfig, demo_commands, demo_dir

runner = CliRunner()


def _triples(data):
    return [(t.reference, t.conditioning, t.target) for t in data.triplets]


def test_toy_seed_draws_other_triplets_and_captions_deterministically():
    a, a_again, b = (load_text_triplets("toy:30", toy_seed=s) for s in (0, 0, 1))
    assert _triples(a) == _triples(a_again) and _triples(a) != _triples(b)
    assert a.source == "toy:30" and b.source == "toy:30 (toy seed 1)"
    caps0, caps1 = load_captions("toy:30", toy_seed=0), load_captions("toy:30", toy_seed=1)
    assert caps0.captions != caps1.captions
    # the captions are the triplets' reference and target captions, for the same seed
    assert caps1.captions[:2] == [b.triplets[0].reference, b.triplets[0].target]
    # a file source ignores it
    assert load_text_triplets("toy:5", toy_seed=3).source.startswith("toy:5")


def test_toy_seed_draws_another_benchmark_and_groups_follow_the_changed_attribute():
    (b0,) = load_toy("test", n_queries=12, n_distractors=5, seed=0)
    (b1,) = load_toy("test", n_queries=12, n_distractors=5, seed=1)
    assert len(b0.gallery) == 17 and len(b0.queries) == 12
    assert [q.captions for q in b0.queries] != [q.captions for q in b1.queries]
    world = toy.modification_triplets("test", 12, n_distractors=5, seed=1)
    assert [q.groups for q in b1.queries] == [(c,) for c in world.changed]
    assert {g for q in b1.queries for g in q.groups} <= set(toy.ATTRIBUTES)
    # the benchmark's images are rendered from the split's own digit instances: the digits
    # of `train` (the tiny CLIP's fit) never appear in `val` or `test`
    train = set(toy.split_indices("train").tolist())
    assert not train & set(toy.split_indices("test").tolist())
    assert not train & set(toy.split_indices("val").tolist())


@pytest.mark.parametrize("command", ["train", "train-phi"])
def test_training_commands_take_the_toy_seed_apart_from_the_training_seed(command):
    phi = ["--phi", "phi.pt"] if command == "train" else []
    args = [command, "--preset", "toy", "--toy-seed", "4", "--seed", "9", "--dry-run", *phi]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    cfg = json.loads(res.stdout)["config"]
    assert (cfg["toy_seed"], cfg["seed"]) == (4, 9)
    res = runner.invoke(app, [command, "--preset", "toy", "--toy-seed", "-1", *phi])
    assert res.exit_code == 1 and "--toy-seed must be >= 0, got -1" in res.output


def test_demo_passes_the_toy_seed_to_every_command(tmp_path):
    steps = demo_commands(DemoConfig(toy_seed=7), tmp_path)
    assert [name for name, _ in steps] == ["train-phi", "eval-base", "train", "eval-rtd"]
    for _, argv in steps:
        assert argv[argv.index("--toy-seed") + 1] == "7"
        assert "--seed" not in argv  # the training seeds stay the presets'
    evals = [argv for name, argv in steps if name.startswith("eval")]
    assert all(argv[argv.index("--split") + 1] == "test" for argv in evals)
    # the gallery size comes from `rtd eval`'s defaults, not from the demo
    assert all("--toy-queries" not in argv and "--toy-distractors" not in argv for argv in evals)
    train = dict(steps)["train"]
    assert DemoConfig(train_args=("--lr", "1e-12")).train_args == ("--lr", "1e-12")
    assert demo_commands(DemoConfig(train_args=("--lr", "1e-12")), tmp_path)[2][1][-2:] == [
        "--lr", "1e-12"]  # fmt: skip
    assert train[-1] == "--overwrite"


def test_each_toy_seed_has_its_own_demo_folder(tmp_path):
    """`make demo-rtd TOY_SEED=1` must not overwrite seed 0's runs: runs/rtd/demo/seed-N,
    and every command writes under its seed's folder."""
    assert demo_dir(0) == Path("runs/rtd/demo/seed-0") != demo_dir(1)
    out = demo_dir(3, tmp_path)
    assert out == tmp_path / "seed-3"
    for _, argv in demo_commands(DemoConfig(toy_seed=3), out):
        written = argv[argv.index("-o") + 1]
        assert Path(written).parent == out, argv
    make = (Path(__file__).resolve().parents[2] / "rtd-cli" / "rtd.mk").read_text()
    assert "--out $(RTD_DEMO)/seed-$(TOY_SEED)" in make and "RTD_DEMO := runs/rtd/demo" in make


def test_seen_triplet_split_counts_the_benchmark_triplets_met_in_training(tmp_path):
    from labshared.items import write_items
    from rtd_cli.demo import seen_triplet_split

    n = 40
    world = toy.modification_triplets("test", n, n_distractors=0, seed=2)
    triples = [(r["reference_caption"], r["conditioning_caption"], r["target_caption"])
               for r in toy.text_triplets(3000, seed=2)]  # fmt: skip
    seen = [t in set(triples) for t in zip(world.reference_captions, world.texts,
                                           world.target_captions, strict=True)]  # fmt: skip
    assert 0 < sum(seen) < n  # the grammar is small: some occur, not all
    for run, cfg in (
        ("eval-base", {"split": "test", "toy_queries": n, "toy_distractors": 0, "toy_seed": 2}),
        ("train", {"triplets": "toy:3000", "toy_seed": 2}),
    ):
        (tmp_path / run).mkdir()
        (tmp_path / run / "config.json").write_text(json.dumps({"config": cfg}))
    # base finds every query at rank 1; + RTD only the unseen ones (rank 2 for the seen)
    for run, rank in (("eval-base", lambda s: 1), ("eval-rtd", lambda s: 2 if s else 1)):
        (tmp_path / run).mkdir(exist_ok=True)
        columns = {"part": ["toy"] * n, "query_id": [str(i) for i in range(n)],
                   "first_rank": [rank(s) for s in seen]}  # fmt: skip
        write_items(tmp_path / run, "queries", columns, keys=["part", "query_id"])
    split = seen_triplet_split(tmp_path)
    assert split["seen"] == {"queries": sum(seen), "base_r1": 100.0, "rtd_r1": 0.0}
    assert split["unseen"] == {"queries": n - sum(seen), "base_r1": 100.0, "rtd_r1": 100.0}
