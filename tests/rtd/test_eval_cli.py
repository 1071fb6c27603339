"""`rtd eval` end to end through CliRunner: the toy world with the fitted tiny CLIP, and CIRR /
CIRCO test splits in their official layouts (server files checked against the formats)."""

import json

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from labshared.items import read_items
from rtd_cli.cli import app
from rtd_cli.model import (
    build_clip,
    build_projection,
    clip_dims,
    save_projection,
    text_tower_from_clip,
)
from rtd_cli.tower_file import save_text_tower

runner = CliRunner()


def _invoke(args, command="eval"):
    result = runner.invoke(app, [command, *args] if command else args)
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def tiny_random(tmp_path_factory):
    """An untrained tiny-clip-toy (no fit needed) and random phis for it."""
    from labshared.tinyclip.model import register_tiny_clip

    register_tiny_clip()
    model, _, _ = build_clip("tiny-clip-toy", "random")
    d, t = clip_dims(model)
    root = tmp_path_factory.mktemp("phi")
    torch.manual_seed(0)
    save_projection(root / "lincir.pt", build_projection("lincir", d, t), "lincir")
    save_projection(root / "pic2word.pt", build_projection("pic2word", d, t), "pic2word")
    return root


def test_toy_eval_end_to_end_with_the_tiny_clip(tiny_random, tmp_path):
    from labshared.tinyclip.fit import load_tiny_clip

    model, _, _ = load_tiny_clip()
    common = [
        "--dataset",
        "toy",
        "--backbone",
        "tiny-clip-toy",
        "--phi",
        str(tiny_random / "lincir.pt"),
        "--toy-queries",
        "40",
        "--toy-distractors",
        "15",
    ]
    result = _invoke([*common, "-o", str(tmp_path / "base")])
    assert "R@1" in result.stdout and "mAP@10" in result.stdout
    base = json.loads((tmp_path / "base" / "metrics.json").read_text())
    assert base["n_queries"] == {"toy": 40} and set(base["summary"]) == {
        "R@1",
        "R@5",
        "R@10",
        "mAP@5",
        "mAP@10",
    }
    config = json.loads((tmp_path / "base" / "config.json").read_text())
    assert config["config"]["dataset"] == "toy" and config["runtime"]["device"] == "cpu"
    assert (config["tool"], config["command"], config["preset"]) == ("rtd", "eval", None)
    # per changed attribute: the toy's three groups partition the queries, so each overall
    # figure is the query-weighted mean of the groups' (an independent check of the split)
    assert list(base["by_attribute"]) == ["digit", "colour", "background"]
    counts = base["attribute_queries"]
    assert sum(counts.values()) == 40 and base["n_gallery"] == {"toy": 40 + 15}
    for key, value in base["summary"].items():
        weighted = sum(base["by_attribute"][g][key] * n for g, n in counts.items()) / 40
        assert value == pytest.approx(weighted)
    assert "by changed attribute" in result.stdout and base["toy_seed"] == 0
    # per query (items/queries.parquet): the table recomputes every summary figure
    rows = read_items(tmp_path / "base", "queries").to_pylist()
    assert base["items"] == "items/queries.parquet"
    assert [q["query_id"] for q in rows] == [str(i) for i in range(40)]
    assert all(len(q["top_ids"]) == 50 for q in rows)  # 55-image gallery, top 50 kept
    assert sum(q["first_rank"] == 1 for q in rows) / 40 * 100 == pytest.approx(
        base["summary"]["R@1"]
    )
    assert sum(q["first_rank"] in range(1, 6) for q in rows) / 40 * 100 == pytest.approx(
        base["summary"]["R@5"]
    )
    for key, value in base["summary"].items():
        assert sum(q[key] for q in rows) / 40 == pytest.approx(value, abs=1e-4)
    assert all(q["reference"] and q["targets"] for q in rows)
    assert sum(q["groups"] == ["digit"] for q in rows) == counts["digit"]
    # an interval over queries beside every figure, seeded and recorded
    assert base["bootstrap"] == {"n_resamples": 10_000, "confidence": 0.95, "seed": 0,
                                 "method": "percentile", "unit": "query"}  # fmt: skip
    for key, value in base["summary"].items():
        low, high = base["intervals"]["summary"][key]
        assert low <= value <= high and high - low > 0
    assert set(base["intervals"]["by_attribute"]) == {"digit", "colour", "background"}
    r1 = base["summary"]["R@1"]
    low, high = base["intervals"]["summary"]["R@1"]
    assert f"{r1:.2f} [{low:.2f}, {high:.2f}]" in result.stdout

    # --text-encoder: the untouched tower reproduces the base exactly; a changed one does not
    tower = text_tower_from_clip(model)
    save_text_tower(
        tmp_path / "same.safetensors", tower, {"backbone": "tiny-clip-toy", "pretrained": None}
    )
    _invoke(
        [
            *common,
            "--text-encoder",
            str(tmp_path / "same.safetensors"),
            "-o",
            str(tmp_path / "same"),
        ]
    )
    same = json.loads((tmp_path / "same" / "metrics.json").read_text())
    assert same["summary"] == base["summary"]
    with torch.no_grad():
        tower.ln_final.weight.mul_(-1.0)
        tower.text_projection.mul_(torch.randn_like(tower.text_projection))
    save_text_tower(
        tmp_path / "changed.safetensors", tower, {"backbone": "tiny-clip-toy", "pretrained": None}
    )
    _invoke(
        [
            *common,
            "--text-encoder",
            str(tmp_path / "changed.safetensors"),
            "-o",
            str(tmp_path / "changed"),
            "--json",
        ]
    )
    changed = json.loads((tmp_path / "changed" / "metrics.json").read_text())
    assert changed["summary"] != base["summary"]

    # rtd compare: the same queries, paired; the identical tower differs by exactly 0
    runs = [str(tmp_path / r) for r in ("base", "same", "changed")]
    out = _invoke([*runs, "--json", "--resamples", "2000"], "compare").stdout
    cmp = json.loads(out)
    assert cmp["entries"] == ["base", "same", "changed"] and cmp["n_items"] == 40
    r1 = cmp["metrics"]["R@1"]
    assert r1["differences"]["same"]["diff"] == 0.0
    assert r1["differences"]["same"]["interval"] == [0.0, 0.0]
    assert r1["differences"]["same"]["p_value"] == 1.0
    assert r1["differences"]["changed"]["diff"] == pytest.approx(
        changed["summary"]["R@1"] - base["summary"]["R@1"]
    )
    assert r1["differences"]["changed"]["test"] == "exact McNemar"
    assert r1["values"]["base"]["value"] == pytest.approx(base["summary"]["R@1"])
    table = _invoke([runs[0], runs[2], "--name", "base", "--name", "changed"], "compare").stdout
    assert "R@1" in table and "- base [95 % CI]" in table and "40 paired items" in table
    assert "by changed attribute" in table


def _png(path, seed):
    path.parent.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    Image.fromarray(
        torch.randint(0, 255, (12, 12, 3), generator=g, dtype=torch.uint8).numpy()
    ).save(path)


def test_cirr_test_split_writes_both_server_files(tiny_random, tmp_path):
    names = [f"test1-{i}-0-img0" for i in range(56)]
    root = tmp_path / "CIRR"
    (root / "cirr" / "image_splits").mkdir(parents=True)
    (root / "cirr" / "captions").mkdir(parents=True)
    (root / "cirr" / "image_splits" / "split.rc2.test1.json").write_text(
        json.dumps({n: f"./test1/{n}.png" for n in names})
    )
    items = [
        {
            "pairid": 10 + i,
            "reference": names[i],
            "caption": "is brighter",
            "img_set": {"id": i, "members": names[i : i + 6]},
        }
        for i in range(5)
    ]
    (root / "cirr" / "captions" / "cap.rc2.test1.json").write_text(json.dumps(items))
    for i, n in enumerate(names):
        _png(root / "test1" / f"{n}.png", i)
    args = [
        "--dataset",
        "cirr",
        "--split",
        "test",
        "--data-root",
        str(root),
        "--backbone",
        "tiny-clip-toy",
        "--pretrained",
        "random",
        "--workers",  # the images through a DataLoader worker; auto decode = PIL on a CPU
        "1",
        "--decode",
        "auto",
    ]
    result = _invoke(
        [
            *args,
            "--base",
            "pic2word",
            "--phi",
            str(tiny_random / "pic2word.pt"),
            "--prompt",
            "base",
            "-o",
            str(tmp_path / "run"),
        ]
    )
    assert "server files" in result.stdout
    recall = json.loads(
        (tmp_path / "run" / "submissions" / "recall_submission_pic2word.json").read_text()
    )
    subset = json.loads(
        (tmp_path / "run" / "submissions" / "recall_subset_submission_pic2word.json").read_text()
    )
    assert recall["version"] == "rc2" and recall["metric"] == "recall"
    assert subset["version"] == "rc2" and subset["metric"] == "recall_subset"
    pairs = {str(10 + i) for i in range(5)}
    assert set(recall) - {"version", "metric"} == pairs == set(subset) - {"version", "metric"}
    for i in range(5):
        top, sub = recall[str(10 + i)], subset[str(10 + i)]
        assert len(top) == 50 and len(set(top)) == 50 and names[i] not in top
        assert len(sub) == 3 and set(sub) <= set(names[i + 1 : i + 6])
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["prompt"] == "a photo of * , {mod}" and len(metrics["submission_files"]) == 2


def test_circo_test_split_writes_its_server_file(tiny_random, tmp_path):
    root = tmp_path / "CIRCO"
    ids = list(range(500, 555))
    info = {"images": [{"id": i, "file_name": f"{i:012d}.jpg"} for i in ids]}
    (root / "COCO2017_unlabeled" / "annotations").mkdir(parents=True)
    (root / "COCO2017_unlabeled" / "annotations" / "image_info_unlabeled2017.json").write_text(
        json.dumps(info)
    )
    for i in ids:
        _png(root / "COCO2017_unlabeled" / "unlabeled2017" / f"{i:012d}.jpg", i)
    (root / "annotations").mkdir()
    queries = [
        {
            "id": q,
            "reference_img_id": ids[q],
            "relative_caption": "has a hat",
            "shared_concept": "x",
        }
        for q in range(3)
    ]
    (root / "annotations" / "test.json").write_text(json.dumps(queries))
    args = [
        "--dataset",
        "circo",
        "--split",
        "test",
        "--data-root",
        str(root),
        "--backbone",
        "tiny-clip-toy",
        "--pretrained",
        "random",
    ]
    _invoke([*args, "--phi", str(tiny_random / "lincir.pt"), "-o", str(tmp_path / "run")])
    sub = json.loads(
        (tmp_path / "run" / "submissions" / "circo_submission_lincir.json").read_text()
    )
    assert set(sub) == {"0", "1", "2"}
    assert all(
        len(v) == 50 and all(isinstance(x, int) and x in ids for x in v) for v in sub.values()
    )


def _circo_val(root, aspects):
    """CIRCO in its official layout (miccunifi/CIRCO README): COCO unlabeled info + images,
    annotations/val.json with `gt_img_ids` and `semantic_aspects` per query."""
    ids = list(range(700, 730))
    info = {"images": [{"id": i, "file_name": f"{i:012d}.jpg"} for i in ids]}
    ann_dir = root / "COCO2017_unlabeled" / "annotations"
    ann_dir.mkdir(parents=True)
    (ann_dir / "image_info_unlabeled2017.json").write_text(json.dumps(info))
    for i in ids:
        _png(root / "COCO2017_unlabeled" / "unlabeled2017" / f"{i:012d}.jpg", i)
    items = [
        {"id": q, "reference_img_id": ids[q], "target_img_id": ids[q + 5],
         "relative_caption": "has a hat", "shared_concept": "x",
         "gt_img_ids": [ids[q + 5], ids[q + 6], ids[q + 12]], "semantic_aspects": a}
        for q, a in enumerate(aspects)
    ]  # fmt: skip
    (root / "annotations").mkdir()
    (root / "annotations" / "val.json").write_text(json.dumps(items))
    return ids


def test_circo_val_reports_semantic_aspect_map(tiny_random, tmp_path):
    """Each query carries exactly one of 'viewpoint' / 'negation', so their query-weighted
    mean is the overall mAP@10, whatever the (random) model ranks; 'cardinality' sits on
    two of them too."""
    aspects = [["viewpoint", "cardinality"], ["viewpoint"], ["negation", "cardinality"],
               ["viewpoint"], ["negation"]]  # fmt: skip
    _circo_val(tmp_path / "CIRCO", aspects)
    res = _invoke(["--dataset", "circo", "--split", "val", "--data-root", str(tmp_path / "CIRCO"),
                   "--backbone", "tiny-clip-toy", "--pretrained", "random",
                   "--phi", str(tiny_random / "lincir.pt"),
                   "-o", str(tmp_path / "run")])  # fmt: skip
    assert "semantic aspect" in res.stdout and "viewpoint" in res.stdout
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    sem, n = m["semantic_aspects"], m["semantic_aspect_queries"]
    assert list(sem) == ["cardinality", "negation", "viewpoint"]  # the official order
    assert n == {"cardinality": 2, "negation": 2, "viewpoint": 3}
    weighted = (3 * sem["viewpoint"] + 2 * sem["negation"]) / 5
    assert weighted == pytest.approx(m["summary"]["mAP@10"], abs=1e-4)


def test_errors_are_one_red_line(tiny_random, tmp_path):
    bad = tmp_path / "bad.pt"
    torch.save({"weights": {}}, bad)
    result = runner.invoke(
        app,
        [
            "eval",
            "--dataset",
            "toy",
            "--backbone",
            "tiny-clip-toy",
            "--pretrained",
            "random",
            "--phi",
            str(bad),
            "-o",
            str(tmp_path / "r"),
        ],
    )
    assert (
        result.exit_code == 1
        and "expected a lincir checkpoint with top-level key 'Phi'" in result.output
    )
    result = runner.invoke(
        app,
        ["eval", "--dataset", "toy", "--phi", str(tiny_random / "lincir.pt"), "--prompt", "mine"],
    )
    assert result.exit_code == 1 and "--prompt 'mine'" in result.output
    toy = ["eval", "--dataset", "toy", "--backbone", "tiny-clip-toy", "--pretrained", "random",
           "--phi", str(tiny_random / "lincir.pt"), "--no-cache"]  # fmt: skip
    result = runner.invoke(app, [*toy, "--toy-seed", "-1"])
    assert result.exit_code == 1 and "--toy-seed must be >= 0, got -1" in result.output
    result = runner.invoke(app, [*toy, "--toy-distractors", "-2"])
    assert result.exit_code == 1 and "--toy-distractors must be >= 0, got -2" in result.output
    # the toy's train split (the tiny CLIP's fitting images) is never a benchmark
    result = runner.invoke(app, [*toy, "--split", "train", "-o", str(tmp_path / "t")])
    assert result.exit_code == 1 and "'train'" in result.output and "val, test" in result.output
    assert not (tmp_path / "t").exists()  # checked before the run folder was made


def test_a_failed_check_leaves_no_folder_and_the_corrected_rerun_works(tiny_random, tmp_path):
    out = tmp_path / "out"
    args = ["eval", "--backbone", "tiny-clip-toy", "--pretrained", "random", "--phi",
            str(tiny_random / "lincir.pt"), "--toy-queries", "10", "--toy-distractors", "5",
            "--no-cache", "-o", str(out)]  # fmt: skip
    result = runner.invoke(app, [*args, "--dataset", "cirrr"])
    assert result.exit_code == 1 and "did you mean 'cirr'" in result.output
    assert not out.exists()
    result = runner.invoke(app, [*args, "--dataset", "cirr", "--data-root", str(tmp_path / "no")])
    assert result.exit_code == 1 and "--data-root" in result.output and not out.exists()
    result = runner.invoke(app, [*args, "--dataset", "toy"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "metrics.json").read_text())["n_queries"] == {"toy": 10}


def test_dry_run_prints_the_resolved_config(tiny_random):
    args = [
        "--dataset",
        "fashioniq",
        "--phi",
        str(tiny_random / "lincir.pt"),
        "--parts",
        "dress,shirt",
    ]
    result = _invoke([*args, "--toy-seed", "3", "--seed", "5", "--dry-run"])
    cfg = json.loads(result.stdout)["config"]
    assert (
        cfg["parts"] == ["dress", "shirt"]
        and cfg["prompt"] == "rtd"
        and cfg["backbone"] == "ViT-B-32"
    )
    assert cfg["toy_seed"] == 3 and cfg["workers"] is None  # --seed is the runtime's alone
    assert (cfg["toy_queries"], cfg["toy_distractors"]) == (1000, 1000)  # a 2,000-image gallery


def test_validator_for_rtd_train_tracks_the_tower(tiny_random):
    from labshared.device import setup_runtime
    from rtd_cli.config import EvalConfig
    from rtd_cli.evaluate import make_validator

    model, _, _ = build_clip("tiny-clip-toy", "random")
    runtime = setup_runtime("cpu", "fp32", 0)
    cfg = EvalConfig(
        dataset="toy", backbone="tiny-clip-toy", pretrained="random", base="lincir",
        phi=tiny_random / "lincir.pt", prompt="rtd", toy_queries=60, toy_distractors=60,
    )  # fmt: skip
    validate = make_validator(cfg, runtime, use_cache=False)
    tower = text_tower_from_clip(model)
    first = validate(tower, 0)
    assert set(first) == {"R@1", "R@5", "R@10", "mAP@5", "mAP@10"}
    assert validate(tower, 1) == first  # nothing but the tower changes between calls
    with torch.no_grad():
        tower.text_projection.copy_(torch.randn_like(tower.text_projection))
    assert validate(tower, 2) != first


def test_prompt_defaults_to_the_style_the_tower_was_trained_with(tiny_random, tmp_path):
    """A Pic2Word tower trained on its own '*' prompt is scored with that prompt unless
    --prompt says otherwise; without a recorded style (or a tower) the base's default is
    used: Pic2Word's own prompt, RTD's for SEARLE/LinCIR."""
    from rtd_cli.commands.eval import default_prompt_style
    from rtd_cli.tower_file import read_text_tower_config

    model, _, _ = build_clip("tiny-clip-toy", "random")
    tower = text_tower_from_clip(model)
    cfg = {"backbone": "tiny-clip-toy", "pretrained": "random", "base": "pic2word"}
    base_path = save_text_tower(
        tmp_path / "base.safetensors", tower, {**cfg, "prompt_style": "base"}
    )
    plain_path = save_text_tower(tmp_path / "plain.safetensors", tower, cfg)
    assert default_prompt_style("lincir") == "rtd"
    assert default_prompt_style("pic2word") == "base"
    assert default_prompt_style("lincir", read_text_tower_config(base_path)) == "base"
    assert default_prompt_style("lincir", read_text_tower_config(plain_path)) == "rtd"
    assert default_prompt_style("pic2word", read_text_tower_config(plain_path)) == "base"

    out = tmp_path / "dry"
    res = runner.invoke(
        app,
        ["eval", "--dataset", "toy", "--backbone", "tiny-clip-toy", "--pretrained", "random",
         "--base", "lincir", "--phi", str(tiny_random / "lincir.pt"),
         "--text-encoder", str(base_path), "--dry-run", "-o", str(out)],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert '"prompt": "base"' in res.output
    res = runner.invoke(
        app,
        ["eval", "--dataset", "toy", "--backbone", "tiny-clip-toy", "--pretrained", "random",
         "--base", "lincir", "--phi", str(tiny_random / "lincir.pt"),
         "--text-encoder", str(base_path), "--prompt", "rtd", "--dry-run", "-o", str(out)],
    )  # fmt: skip
    assert res.exit_code == 0 and '"prompt": "rtd"' in res.output


def test_eval_warns_when_phi_was_trained_on_other_clip_weights(tiny_random, tmp_path):
    """`rtd train-phi` writes phi.json beside phi.pt; eval says so when the CLIP differs
    (same dimensions, so loading alone cannot notice), and stays quiet when it agrees or
    when nothing was recorded (official checkpoints)."""
    import shutil

    from rtd_cli.model import phi_provenance_mismatch, write_phi_provenance

    phi = tmp_path / "phi.pt"
    shutil.copy(tiny_random / "lincir.pt", phi)
    assert phi_provenance_mismatch(phi, "tiny-clip-toy", "random") is None  # no sidecar
    write_phi_provenance(phi, "tiny-clip-toy", "random", "lincir")
    assert phi_provenance_mismatch(phi, "tiny-clip-toy", "random") is None
    other = phi_provenance_mismatch(phi, "tiny-clip-toy", "/weights/other.safetensors")
    assert "random" in other and "other.safetensors" in other

    args = ["eval", "--dataset", "toy", "--backbone", "tiny-clip-toy", "--base", "lincir",
            "--phi", str(phi), "--toy-queries", "20", "--toy-distractors", "20",
            "--no-cache"]  # fmt: skip
    quiet = runner.invoke(app, [*args, "--pretrained", "random", "-o", str(tmp_path / "a")])
    assert quiet.exit_code == 0, quiet.output
    assert "warning" not in quiet.output
    side = phi.with_suffix(".json")
    side.write_text(json.dumps({**json.loads(side.read_text()), "weights": "0123abcd"}))
    loud = runner.invoke(app, [*args, "--pretrained", "random", "-o", str(tmp_path / "b")])
    assert loud.exit_code == 0, loud.output
    assert "warning" in loud.output and "0123abcd" in loud.output


def test_eval_sends_its_final_metrics_to_report_to(tiny_random, tmp_path):
    """Issue 15 item 3: `rtd eval --report-to tensorboard` logs the summary of metrics.json
    as one `final` line of metrics.jsonl and as TensorBoard scalars."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from labshared.training.metric_log import read_jsonl

    out = tmp_path / "eval"
    _invoke(["--dataset", "toy", "--backbone", "tiny-clip-toy", "--pretrained", "random",
             "--phi", str(tiny_random / "lincir.pt"), "--toy-queries", "20",
             "--toy-distractors", "5", "--report-to", "tensorboard", "-o", str(out)])  # fmt: skip
    summary = json.loads((out / "metrics.json").read_text())["summary"]
    (row,) = read_jsonl(out)
    assert {k: row["final"][f"summary/{k}"] for k in summary} == pytest.approx(summary)
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    assert events.Scalars("final/summary/R@1")[0].value == pytest.approx(summary["R@1"])
