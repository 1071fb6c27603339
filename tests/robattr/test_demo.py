"""The demo pipeline (`make demo-robattr`, the effect gate) end to end at toy size, the
gate rule, and the toy seed reaching the data split."""

import json

import numpy as np
import pytest

from labshared.data.image_classification import build_dataset, mnist5k_split
from robattr_cli.demo import METRICS, DemoConfig, format_markdown, gate_passes, main, run_demo

TINY = DemoConfig(
    toy_seed=1, n_rps=8, n_topk=4, n_iter=2, n_draws=2, n_resamples=200, workers=1,
    epochs=1, limit_train=256,
)  # fmt: skip


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    return out, run_demo(TINY, out)


def test_all_models_are_scored_on_the_same_correct_digits(tiny_run):
    out, result = tiny_run
    models = ("none", "l2cos", "none-2", "l2cos-2")
    assert set(result["accuracy"]) == set(models)
    assert result["n_test"] == 1000 and 8 <= result["n_common"] <= 1000
    for model, seed in zip(models, (1234, 1234, 1235, 1235), strict=True):
        saved = json.loads((out / model / "train" / "config.json").read_text())
        assert saved["config"]["toy_seed"] == 1 and saved["config"]["limit_train"] == 256
        assert saved["config"]["regularizer"] == model.split("-")[0]
        assert saved["runtime"]["seed"] == seed
    # each interval is the bootstrap of the difference of the compared models' means
    means = result["means"]
    for key, _ in METRICS:
        comp = result["comparisons"]
        pairs = {
            "effect_seed1": means["l2cos"][key] - means["none"][key],
            "effect_seed2": means["l2cos-2"][key] - means["none-2"][key],
            "floor_none": means["none-2"][key] - means["none"][key],
            "floor_l2cos": means["l2cos-2"][key] - means["l2cos"][key],
        }
        pairs["effect_pooled"] = (pairs["effect_seed1"] + pairs["effect_seed2"]) / 2
        assert set(comp) == set(pairs)
        for name, diff in pairs.items():
            assert comp[name][key]["mean"] == pytest.approx(diff)
            assert comp[name][key]["low"] <= comp[name][key]["mean"] <= comp[name][key]["high"]
            assert comp[name][key]["n"] == (8 if key.startswith("rps") else 4)


def test_outputs_written_and_table_lists_every_metric(tiny_run):
    out, result = tiny_run
    saved = json.loads((out / "demo.json").read_text())
    assert saved["comparisons"] == json.loads(json.dumps(result["comparisons"]))
    table = (out / "demo_table.md").read_text()
    assert table.strip() == format_markdown(result)
    for _, label in METRICS:
        # a row of means, a row of differences, and none + l2cos in the paired table
        assert table.count(f"| {label}") == 4
    assert "toy seed 1" in table and "s = 1234 (none, l2cos) and s+1 = 1235" in table
    # the shared paired comparison: none vs l2cos on the same digits, with p-values
    topk = result["paired"]["topk"]
    assert topk["entries"] == ["none", "l2cos"] and topk["n_items"] == 4
    d = topk["metrics"]["top-k attack: top-k intersection"]["differences"]["l2cos"]
    assert d["diff"] == pytest.approx(result["comparisons"]["effect_seed1"]["topk_topk"]["mean"])
    assert result["paired"]["rps"]["n_items"] == 8 and "- none [95 % CI]" in table
    assert saved["bootstrap"]["seed"] == 1 and saved["bootstrap"]["n_resamples"] == 200
    # the figure: maps before / after the attack under both, and the paired differences
    from PIL import Image

    with Image.open(out / "robattr_none_vs_l2cos.png") as image:
        assert image.format == "PNG" and image.width > 900


def test_gate_rule():
    above = {"topk_topk": {"low": 0.001}}
    result = {
        "accuracy": {"none": 0.97, "l2cos": 0.965, "none-2": 0.96, "l2cos-2": 0.99},
        "comparisons": {"effect_seed1": above, "effect_seed2": above},
    }
    assert gate_passes(result)
    below = {"topk_topk": {"low": -0.001}}
    assert not gate_passes(
        {**result, "comparisons": {**result["comparisons"], "effect_seed2": below}}
    )
    assert not gate_passes({**result, "accuracy": {**result["accuracy"], "none-2": 0.959}})


def test_main_rejects_impossible_sizes(tmp_path):
    from labshared.errors import ConfigError

    with pytest.raises(ConfigError, match="--n-topk 600 / --n-rps 500"):
        main(["--out", str(tmp_path), "--n-topk", "600"])


def test_toy_seed_redraws_the_mnist_split():
    train0, test0 = (mnist5k_split(s, 0) for s in ("train", "test"))
    train1, test1 = (mnist5k_split(s, 1) for s in ("train", "test"))
    assert len(train1[0]) == 4000 and len(test1[0]) == 1000
    key = lambda images: {img.tobytes() for img in images}  # noqa: E731
    assert not key(train1[0]) & key(test1[0])  # disjoint
    assert len(key(train1[0]) | key(test1[0])) == len(key(train0[0]) | key(test0[0]))
    assert key(test1[0]) != key(test0[0])
    assert np.array_equal(build_dataset("mnist", None, "test", False).labels, test0[1])
    seeded = build_dataset("mnist", None, "test", False, data_seed=1)
    assert np.array_equal(seeded.labels, test1[1])


def test_worker_pool_keeps_the_order_of_the_calls():
    """`--workers 2` runs jobs in spawned processes; results come back in call order, as
    the in-process path returns them."""
    from robattr_cli.demo import run_jobs

    calls = [(pow, base, 3) for base in range(6)]
    assert run_jobs(calls, 2) == run_jobs(calls, 1) == [b**3 for b in range(6)]


def test_each_toy_seed_has_its_own_demo_folder():
    """`make demo-robattr TOY_SEED=N` writes runs/robattr/demo/seed-N (robattr.mk agrees),
    so another seed does not overwrite seed 0."""
    from pathlib import Path

    from robattr_cli.demo import demo_dir

    assert demo_dir(0) == Path("runs/robattr/demo/seed-0") != demo_dir(1)
    mk = (Path(__file__).parents[2] / "robattr-cli" / "robattr.mk").read_text()
    assert "--toy-seed $(TOY_SEED) --out runs/robattr/demo/seed-$(TOY_SEED)" in mk


def test_a_demo_training_labels_its_lines(tmp_path, capsys):
    """The demo trains several models into one log: each training's lines (its progress,
    each epoch, the start) begin with its model's name and seed."""
    from dataclasses import replace

    from robattr_cli.demo_jobs import train_job

    cfg = replace(TINY, epochs=1, limit_train=64)
    job = train_job("none-2", "none", 7, cfg, str(tmp_path / "none-2"))
    assert job["name"] == "none-2" and job["run_dir"] == str(tmp_path / "none-2")
    err = capsys.readouterr().err
    assert "demo none-2 (seed 7): mnist-cnn (softplus) on mnist" in err
    assert "demo none-2 (seed 7): epoch 1/1:" in err
    assert "demo none-2 (seed 7) step 1/1 (100.0%)" in err
