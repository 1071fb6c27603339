"""End to end through the CLI on the toy world (generate -> filter -> retrain, erm), and
the content keys of the feature caches."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from tldr_cli.cli import app
from tldr_cli.wordlists import load_wordlists

SMALL = ["--preset", "toy", "--toy-n-train", "200", "--backbone-weights", "none",
         "--n-gap-pairs", "64", "--device", "cpu"]  # fmt: skip


EMPTY_LARGE = {
    "dataset": "toy",
    "classes": {"small digit": ["two"], "large digit": []},
    "spurious": {"grass": ["grass"], "brick": ["brick"]},
    "anchors": {
        "classes": {"small digit": "a small digit", "large digit": "a large digit"},
        "spurious": {"grass": "on grass", "brick": "on brick"},
    },
}


@pytest.fixture(scope="module")
def runner():
    return CliRunner()


def invoke(runner, args):
    result = runner.invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def test_generate_filter_retrain(tmp_path, runner):
    invoke(runner, ["generate", "--offline-toy", "-o", str(tmp_path / "gen")])
    raw = json.loads((tmp_path / "gen" / "wordlists.json").read_text())

    out = invoke(
        runner,
        [
            "filter",
            "--words",
            str(tmp_path / "gen" / "wordlists.json"),
            *SMALL,
            "-o",
            str(tmp_path / "filter"),
        ],
    ).stdout
    assert "by the CLIP anchor filter" in out
    kept = json.loads((tmp_path / "filter" / "wordlists.json").read_text())
    report = json.loads((tmp_path / "filter" / "filter_report.json").read_text())
    removed = {(r["list"], r["word"]) for r in report["removed"]}
    for kind in ("classes", "spurious"):
        for name, words in raw[kind].items():
            # every word is either kept or reported, never both
            assert set(kept[kind][name]) | {w for n, w in removed if n == name} == set(words)
            assert not set(kept[kind][name]) & {w for n, w in removed if n == name}
    # a word planted in both class lists survives in at most one (stage 1 is nearest-anchor)
    small, large = (set(map(str.lower, kept["classes"][k])) for k in kept["classes"])
    planted = set(map(str.lower, raw["classes"]["small digit"])) & set(
        map(str.lower, raw["classes"]["large digit"])
    )
    assert planted and not (small & large & planted)
    assert report["removed_stage1"] + report["removed_stage2"] == len(report["removed"]) > 0
    assert (tmp_path / "filter" / "config.json").is_file()

    load_wordlists(tmp_path / "filter" / "wordlists.json")  # the filter's output is retrain's input
    # retrain reads the generated lists: with this tiny from-scratch ERM head the classifier
    # filter may empty a class list, which retrain refuses (test_bad_options_fail_with_one_line)
    out = invoke(
        runner,
        [
            "retrain",
            "--words",
            str(tmp_path / "gen" / "wordlists.json"),
            *SMALL,
            "--toy-n-val",
            "80",
            "--toy-n-test",
            "80",
            "--head-epochs",
            "2",
            "--dfr-retrains",
            "3",
            "--report-to",
            "tensorboard",
            "-o",
            str(tmp_path / "retrain"),
        ],
    ).stdout
    assert "worst-group" in out and "TLDR" in out and "DFR" in out
    metrics = json.loads((tmp_path / "retrain" / "metrics.json").read_text())
    assert set(metrics["test"]) == {"ERM", "TLDR", "DFR"}
    for m in metrics["test"].values():
        assert 0.0 <= m["worst_group_acc"] <= m["class_balanced_acc"] <= 1.0
        assert [g["n"] for g in m["groups"]] == [20, 20, 20, 20]
        assert [g["train_n"] for g in m["groups"]] == [95, 5, 5, 95]  # 95 % correlation
    assert metrics["info"]["dfr"]["num_retrains"] == 3
    assert 0.0 < metrics["info"]["projector_r2_train"] <= 1.0  # ridge fit on the training images
    assert (tmp_path / "retrain" / "figures" / "accuracy.png").stat().st_size > 1000
    assert (tmp_path / "retrain" / "checkpoints" / "tldr_head.safetensors").is_file()
    check_outputs(tmp_path / "retrain", runner, tmp_path)
    _head_steps_are_logged(tmp_path / "retrain", metrics)


def _head_steps_are_logged(run_dir, metrics):
    """Every step of the TLDR head is one line of metrics.jsonl (loss, lr, epoch), then the
    final test metrics; --report-to tensorboard holds the same values."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from labshared.training.metric_log import read_jsonl

    rows = read_jsonl(run_dir)
    steps = metrics["info"]["tldr"]["steps"]
    assert [r["step"] for r in rows] == [*range(1, steps + 1), steps]
    assert rows[steps // 2 - 1]["epoch"] == 1.0 and rows[steps - 1]["epoch"] == 2.0
    assert all(r["lr"] == rows[0]["lr"] and r["loss"] > 0 for r in rows[:-1])
    final = rows[-1]["final"]
    assert final["test/TLDR/worst_group_acc"] == metrics["test"]["TLDR"]["worst_group_acc"]
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    logged = [(e.step, e.value) for e in events.Scalars("loss")]
    assert logged == [(r["step"], pytest.approx(r["loss"])) for r in rows[:-1]]
    tb_final = events.Scalars("final/test/TLDR/worst_group_acc")
    assert [e.value for e in tb_final] == [pytest.approx(final["test/TLDR/worst_group_acc"])]


def test_erm_then_dfr_with_the_given_classifier(tmp_path, runner):
    small = [
        "--preset",
        "toy",
        "--toy-n-train",
        "120",
        "--toy-n-test",
        "40",
        "--backbone-weights",
        "none",
    ]
    out = invoke(runner, ["erm", *small, "-o", str(tmp_path / "erm")]).stdout
    assert "worst-group" in out
    assert (tmp_path / "erm" / "checkpoints" / "final" / "model.safetensors").is_file()
    out = invoke(
        runner,
        [
            "retrain",
            "--method",
            "dfr",
            "--classifier",
            str(tmp_path / "erm"),
            *small,
            "--toy-n-val",
            "40",
            "--n-gap-pairs",
            "32",
            "--dfr-retrains",
            "2",
            "-o",
            str(tmp_path / "dfr"),
        ],
    ).stdout
    metrics = json.loads((tmp_path / "dfr" / "metrics.json").read_text())
    assert set(metrics["test"]) == {"ERM", "DFR"}
    assert "gap_norm" not in metrics["info"]  # DFR alone needs no CLIP, gap or projector
    erm = json.loads((tmp_path / "erm" / "metrics.json").read_text())["test"]["ERM"]
    assert metrics["test"]["ERM"]["worst_group_acc"] == pytest.approx(erm["worst_group_acc"])


def test_bad_options_fail_with_one_line(tmp_path, runner):
    (tmp_path / "w.json").write_text(json.dumps(EMPTY_LARGE))
    result = runner.invoke(
        app, ["retrain", "--words", str(tmp_path / "w.json"), *SMALL, "-o", str(tmp_path / "e")]
    )
    assert result.exit_code == 1 and "lists ['classes.large digit'] are empty" in result.output
    result = runner.invoke(
        app, ["retrain", "--method", "tldr", "--preset", "toy", "-o", str(tmp_path / "x")]
    )
    assert result.exit_code == 1 and "--method tldr needs --words" in result.output
    result = runner.invoke(app, ["retrain", "--preset", "toyy", "-o", str(tmp_path / "y")])
    assert result.exit_code == 1 and "did you mean 'toy'" in result.output
    result = runner.invoke(
        app, ["filter", "--words", str(tmp_path / "none.json"), "--template-draw", "x"]
    )
    assert result.exit_code != 0


def test_feature_cache_is_keyed_by_classifier_content(tmp_path, monkeypatch):
    from labshared.device import setup_runtime
    from tldr_cli.classifier import build_classifier
    from tldr_cli.config import PRESETS
    from tldr_cli.features import ClassifierHandle, classifier_features, load_splits

    monkeypatch.setenv("LABSHARED_CACHE", str(tmp_path))
    cfg = PRESETS["toy"]
    runtime = setup_runtime("cpu", "fp32", 0)
    data = load_splits(cfg.__class__(**{**cfg.__dict__, "toy_n_test": 8}), ("test",))["test"]
    torch.manual_seed(0)
    a = ClassifierHandle(build_classifier("toy-cnn", 2), {}, "digest-a")
    torch.manual_seed(1)
    b = ClassifierHandle(build_classifier("toy-cnn", 2), {}, "digest-b")
    fa = classifier_features(a, data, cfg, runtime, True)
    fb = classifier_features(b, data, cfg, runtime, True)
    assert not torch.allclose(fa, fb)  # a new classifier never reuses the old entry
    # same digest: a hit (returns the stored tensors even if the module changed)
    torch.nn.init.zeros_(a.model.backbone.net[0].weight)
    np.testing.assert_array_equal(
        classifier_features(a, data, cfg, runtime, True).numpy(), fa.numpy()
    )
    # --no-cache recomputes
    assert not torch.allclose(classifier_features(a, data, cfg, runtime, False), fa)
    assert len(list((tmp_path / "features").glob("tldr-phi-test-*.safetensors"))) == 2


def check_outputs(run, runner, tmp_path):
    """Per-image rows, intervals and counts in metrics.json, the saved TLDR and DFR heads
    re-scoring to the same figures, and `tldr compare` of ERM vs TLDR vs DFR."""
    from labshared.errors import ConfigError
    from labshared.items import read_items
    from tldr_cli.heads import load_head, scores
    from tldr_cli.metrics import evaluate_predictions
    from tldr_cli.rescore import run_features

    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["n_images"] == {"train": 200, "val": 80, "test": 80}
    assert metrics["bootstrap"]["seed"] == 0 and metrics["bootstrap"]["n_resamples"] == 10_000
    rows = read_items(run, "predictions").to_pandas()
    assert metrics["items"] == "items/predictions.parquet"
    assert rows.groupby("method").size().to_dict() == {"DFR": 80, "ERM": 80, "TLDR": 80}
    for method, m in metrics["test"].items():
        assert m["n"] == 80
        mine = rows[rows.method == method]
        assert mine["correct"].mean() == pytest.approx(m["accuracy"])
        assert ((mine.prediction == mine.label) == (mine.correct == 1)).all()
        assert mine.score.between(0.0, 1.0).all() and mine.file.isna().all()  # toy: in memory
        for key in ("worst_group_acc", "average_acc", "class_balanced_acc", "accuracy"):
            low, high = m["intervals"][key]
            assert low <= m[key] <= high
    # the saved heads, loaded back onto the classifier's features, give the same numbers
    test = rows[rows.method == "ERM"]
    feats = run_features(run)
    train_counts = np.array([g["train_n"] for g in metrics["test"]["ERM"]["groups"]])
    for method in ("TLDR", "DFR"):
        pred, score = scores(load_head(run, method), feats)
        mine = rows[rows.method == method]
        assert (pred == mine.prediction.to_numpy()).all()
        assert np.allclose(score, mine.score.to_numpy())
        again = evaluate_predictions(pred, test.label.to_numpy(), test.spurious.to_numpy(), 2, 2,
                                     train_counts)  # fmt: skip
        for key in ("worst_group_acc", "average_acc", "class_balanced_acc", "accuracy"):
            assert again[key] == metrics["test"][method][key]
    with pytest.raises(ConfigError, match="dfr_head.safetensors: does not exist"):
        load_head(tmp_path / "gen", "DFR")

    out = invoke(runner, ["compare", str(run), "--resamples", "2000", "--json"]).stdout
    cmp = json.loads(out)
    assert cmp["entries"] == ["ERM", "TLDR", "DFR"] and cmp["n_items"] == 80
    wg = cmp["metrics"]["worst-group (%)"]
    assert wg["values"]["TLDR"]["value"] == pytest.approx(
        100 * metrics["test"]["TLDR"]["worst_group_acc"]
    )
    diff = wg["differences"]["DFR"]
    assert diff["diff"] == pytest.approx(
        100
        * (metrics["test"]["DFR"]["worst_group_acc"] - metrics["test"]["ERM"]["worst_group_acc"])
    )
    assert diff["test"] == "paired bootstrap"
    assert cmp["metrics"]["plain accuracy (%)"]["differences"]["TLDR"]["test"] == "exact McNemar"
    table = invoke(runner, ["compare", f"{run}:ERM", f"{run}:TLDR", "--resamples", "500"]).stdout
    assert "retrain:TLDR" in table and "80 paired items" in table
    bad = runner.invoke(app, ["compare", f"{run}:XYZ", str(run)])
    assert bad.exit_code == 1 and "no method 'XYZ'" in bad.output
