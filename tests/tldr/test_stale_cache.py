"""Issue 16's stale-cache repro: `tldr retrain --method dfr` on a Waterbirds-layout folder,
every test image inverted with metadata.csv untouched, run again: the cached run reports
what a `--no-cache` run reports (the keys see every image, not only the metadata)."""

import json
import os
import re

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from tldr_cli.cli import app


def write_waterbirds(root, n=(32, 16, 16)):
    """metadata.csv and 32x32 JPEGs: the bird's colour is the label (a square), the
    background the place; 75 % of training birds on their own place, val/test balanced."""
    rng = np.random.default_rng(0)
    rows, i = ["img_id,img_filename,y,split,place,place_filename"], 0
    for split, count in enumerate(n):
        for k in range(count):
            y = k % 2
            place = (1 - y if k % 8 < 2 else y) if split == 0 else (k // 2) % 2
            img = np.tile([40, 160, 40] if place == 0 else [40, 60, 200], (32, 32, 1))
            img = img + rng.integers(-30, 30, (32, 32, 3))
            img[10:22, 10:22] = [220, 200, 30] if y else [120, 60, 20]
            name = f"{'001.Albatross' if y else '026.Bronzed_Cowbird'}/img_{i:04d}.jpg"
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / name)
            rows.append(f"{i},{name},{y},{split},{place},x.jpg")
            i += 1
    (root / "metadata.csv").write_text("\n".join(rows) + "\n")


def invert_test_images(root):
    """Inverted colours, same names; each mtime moved on by a second (a same-size rewrite
    within the timestamp granularity is the one case a stat fingerprint cannot see)."""
    for line in (root / "metadata.csv").read_text().splitlines()[1:]:
        _, name, _, split, *_ = line.split(",")
        if split == "2":
            path = root / name
            mtime = path.stat().st_mtime_ns + 10**9
            with Image.open(path) as img:
                Image.eval(img, lambda v: 255 - v).save(path)
            os.utime(path, ns=(mtime, mtime))


def test_dfr_after_rewriting_test_images_matches_no_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LABSHARED_CACHE", str(tmp_path / "cache"))
    write_waterbirds(tmp_path / "wb")
    args = ["retrain", "--method", "dfr", "--preset", "waterbirds", "--data-root",
            str(tmp_path / "wb"), "--arch", "toy-cnn", "--backbone-weights", "none",
            "--erm-recipe", "toy", "--device", "cpu", "--num-workers", "0",
            "--dfr-retrains", "2"]  # fmt: skip
    runner = CliRunner()

    def run(name, *extra):
        result = runner.invoke(app, [*args, *extra, "-o", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
        return json.loads((tmp_path / name / "metrics.json").read_text())["test"], result.stderr

    first, _ = run("first")
    metadata = (tmp_path / "wb" / "metadata.csv").stat()
    invert_test_images(tmp_path / "wb")
    assert (tmp_path / "wb" / "metadata.csv").stat() == metadata
    cached, log = run("cached")
    uncached, _ = run("uncached", "--no-cache")
    # the ERM classifier and the train/val features are reused, the test features are not
    assert "cache hit: ERM classifier" in log
    assert re.search(r"cache hit: \S+/tldr-phi-train-\w+\.safetensors\n", log)
    assert re.search(r"cache written: \S+/tldr-phi-test-\w+\.safetensors\n", log)
    assert cached == uncached
    # the inverted images are what the run scored (with keys on metadata.csv alone, the
    # cached run returned `first`'s figures: DFR 100 % worst-group here, 0 % uncached)
    assert cached["DFR"] != first["DFR"]
