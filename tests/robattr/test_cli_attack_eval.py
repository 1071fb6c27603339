"""`robattr train -> attack -> eval` end to end on the offline MNIST-5k digits (CliRunner)."""

import json
import re

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from labshared.errors import ConfigError
from labshared.items import read_items
from robattr_cli.cli import app
from robattr_cli.manipulation import PixelBox

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def pixel_box(run) -> PixelBox:
    meta = json.loads(next((run / "checkpoints").glob("step-*/meta.json")).read_text())
    return PixelBox.from_stats(meta["mean"], meta["std"])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run = tmp_path_factory.mktemp("robattr") / "train"
    result = invoke(
        "train", "--preset", "mnist-toy", "--regularizer", "none", "--epochs", "1",
        "--limit-train", "256", "--limit-eval", "64", "--device", "cpu", "-o", run,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return run


def test_topk_then_frame_then_eval(trained, tmp_path):
    topk_dir, frame_dir, eval_dir = tmp_path / "topk", tmp_path / "frame", tmp_path / "eval"
    result = invoke(
        "attack", "--checkpoint", trained, "--attack", "topk", "--n-iter", "3", "--eps", "16",
        "--num-examples", "6", "--batch-size", "4", "--device", "cpu", "-o", topk_dir,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    saved = load_file(str(topk_dir / "attacked.safetensors"))
    box = pixel_box(trained)
    x, x_adv = saved["x"], saved["x_adv"]
    assert x.shape == x_adv.shape == (6, 1, 28, 28) and saved["h_adv"].shape == (6, 28, 28)
    assert torch.all((x_adv - x).abs() <= box.radius(16) + 1e-6)
    assert torch.all(x_adv >= box.low - 1e-6) and torch.all(x_adv <= box.high + 1e-6)
    metrics = json.loads((topk_dir / "metrics.json").read_text())
    assert metrics["attack"] == "topk" and metrics["num_examples"] == 6
    assert metrics["label_kept"] == 1.0  # the top-k attack never returns a flipped label
    assert 0 <= metrics["similarity_to_clean"]["topk"] <= 1
    low, high = metrics["intervals"]["similarity_to_clean/topk"]
    assert low <= metrics["similarity_to_clean"]["topk"] <= high
    assert metrics["bootstrap"]["unit"] == "image"
    assert (topk_dir / "figures" / "attack.png").read_bytes()[:4] == b"\x89PNG"

    result = invoke(
        "attack", "--checkpoint", trained, "--attack", "frame", "--optimizer", "pgd",
        "--n-iter", "3", "--num-examples", "5", "--batch-size", "5", "--device", "cpu",
        "-o", frame_dir,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    frame_metrics = json.loads((frame_dir / "metrics.json").read_text())
    assert "target_pcc" in frame_metrics and frame_metrics["eps"] == 4.0

    result = invoke(
        "eval", "--checkpoint", trained, "--attacked", frame_dir, "--n-draws", "2",
        "--device", "cpu", "-o", eval_dir,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "clean_accuracy" in result.stdout and "attack/similarity_to_target/pcc" in result.stdout
    ev = json.loads((eval_dir / "metrics.json").read_text())
    assert ev["num_test"] == 1000 and ev["num_examples"] == 5
    assert 0 <= ev["clean_accuracy"] <= 1
    assert len(ev["insertion"]["curve"]) == 20 and len(ev["adv_insertion"]["curve"]) == 20
    # eval recomputes the attacked maps from the saved inputs: same as the attack saved
    assert ev["attack"]["similarity_to_clean"]["pcc"] == pytest.approx(
        json.loads((frame_dir / "metrics.json").read_text())["similarity_to_clean"]["pcc"], abs=1e-5
    )
    assert (eval_dir / "figures" / "eval.png").is_file()
    config = json.loads((eval_dir / "config.json").read_text())
    assert config["config"]["attacked"] == str(frame_dir)
    # per image: one row per (image, measure); each measure's mean is the metrics.json figure
    rows = read_items(eval_dir, "images").to_pandas()
    assert ev["items"] == "items/images.parquet" and rows.image.nunique() == 5
    assert sorted(rows.image.unique()) == saved_index(frame_dir)
    pcc = rows[rows.metric == "attack/similarity_to_clean/pcc"]
    assert len(pcc) == 5 and pcc.value.mean() == pytest.approx(
        ev["attack"]["similarity_to_clean"]["pcc"]
    )
    aopc = rows[rows.metric == "insertion/aopc"].value.mean()
    assert aopc == pytest.approx(ev["insertion"]["aopc"])
    low, high = ev["intervals"]["attack/similarity_to_clean/pcc"]
    assert low <= ev["attack"]["similarity_to_clean"]["pcc"] <= high
    assert ev["bootstrap"]["unit"] == "image" and "clean_accuracy" in ev["intervals"]
    assert "95 % interval" in result.stdout
    # robattr compare: the same five attacked digits scored with another attribution method
    other = tmp_path / "eval-ixg"
    result = invoke(
        "eval", "--checkpoint", trained, "--attacked", frame_dir, "--n-draws", "2",
        "--method", "input-x-grad", "--device", "cpu", "-o", other,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    result = invoke("compare", eval_dir, other, "--name", "grad", "--name", "ixg", "--json",
                    "--resamples", "500")  # fmt: skip
    assert result.exit_code == 0, result.output
    cmp = json.loads(result.stdout)
    assert cmp["entries"] == ["grad", "ixg"] and cmp["n_items"] == 5
    other_ev = json.loads((other / "metrics.json").read_text())
    diff = cmp["metrics"]["attack/similarity_to_clean/pcc"]["differences"]["ixg"]["diff"]
    assert diff == pytest.approx(other_ev["attack"]["similarity_to_clean"]["pcc"]
                                 - ev["attack"]["similarity_to_clean"]["pcc"])  # fmt: skip
    assert "sample_clean_accuracy" in cmp["metrics"]
    # train records how many images it trained and validated on
    assert json.loads((trained / "metrics.json").read_text())["n_images"] == {
        "train": 256, "val": 64}  # fmt: skip


def saved_index(attack_dir) -> list[int]:
    return sorted(load_file(str(attack_dir / "attacked.safetensors"))["index"].tolist())


def test_random_attack_saves_one_draw_and_averages_rps(trained, tmp_path):
    result = invoke(
        "attack", "--checkpoint", trained, "--attack", "random", "--eps", "8", "--n-draws", "3",
        "--num-examples", "4", "--device", "cpu", "-o", tmp_path / "r",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert m["attack"] == "random" and m["eps"] == 8.0 and 0 < m["similarity_to_clean"]["pcc"] <= 1
    saved = load_file(str(tmp_path / "r" / "attacked.safetensors"))
    assert (
        0 < (saved["x_adv"] - saved["x"]).abs().max() <= pixel_box(trained).radius(8).max() + 1e-6
    )


@pytest.mark.parametrize(
    "method_flags",
    [["integrated-gradients", "--ig-steps", "4"], ["smoothgrad", "--sg-samples", "2"]],
)
def test_eval_without_attack_reports_rps_and_insertion(trained, tmp_path, method_flags):
    result = invoke(
        "eval", "--checkpoint", trained, "--num-examples", "4", "--n-draws", "2",
        "--rps-eps", "4,16", "--method", *method_flags, "--device", "cpu", "-o", tmp_path / "e",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    ev = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert ev["method"] == method_flags[0] and "attack" not in ev and ev["num_examples"] == 4
    assert set(ev["rps"]) == {"n_draws", "eps4", "eps16"} and "aopc" in ev["insertion"]
    for eps in ("eps4", "eps16"):
        assert {"pcc", "ssim", "topk", "kendall"} <= set(ev["rps"][eps])
    # more noise moves the maps more
    assert ev["rps"]["eps16"]["pcc"] < ev["rps"]["eps4"]["pcc"]
    assert "rps/eps16/pcc" in result.stdout


def test_official_protocol_scores_the_whole_test_split_misclassified_included(trained, tmp_path):
    """Default sample = the official one: every test digit, in order, wrong ones included;
    --correct-only --num-examples N = the first N the model gets right."""
    from robattr_cli.config import EvalConfig

    assert EvalConfig("x").rps_eps == (4.0,) and EvalConfig("x").num_examples is None
    result = invoke(
        "attack", "--checkpoint", trained, "--attack", "random", "--n-draws", "1",
        "--batch-size", "500", "--device", "cpu", "-o", tmp_path / "r",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    saved = load_file(str(tmp_path / "r" / "attacked.safetensors"))
    assert m["num_examples"] == 1000 and m["sample"] == "all" and m["eps"] == 4.0
    assert torch.equal(saved["index"], torch.arange(1000))
    wrong = (saved["pred"] != saved["y"]).float().mean().item()
    assert wrong > 0, "the 1-epoch model must misclassify some digits for this test"
    assert m["clean_accuracy"] == pytest.approx(1 - wrong)

    result = invoke(
        "eval", "--checkpoint", trained, "--n-ratios", "0", "--n-draws", "1", "--batch-size",
        "500", "--device", "cpu", "-o", tmp_path / "e",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    ev = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert ev["num_examples"] == 1000 and ev["sample"] == "all"
    assert ev["sample_clean_accuracy"] == pytest.approx(ev["clean_accuracy"])
    assert ev["clean_accuracy"] == pytest.approx(1 - wrong)
    assert set(ev["rps"]) == {"n_draws", "eps4"}

    result = invoke(
        "eval", "--checkpoint", trained, "--correct-only", "--num-examples", "7", "--n-ratios",
        "0", "--rps-eps", "0", "--device", "cpu", "-o", tmp_path / "c",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    ev = json.loads((tmp_path / "c" / "metrics.json").read_text())
    assert ev["num_examples"] == 7 and ev["sample"] == "correct"
    assert ev["sample_clean_accuracy"] == 1.0 and "rps" not in ev


@pytest.mark.parametrize(
    ("text", "parsed"),
    [("4", (4.0,)), ("4,8,16", (4.0, 8.0, 16.0)), (" 2, 4 ", (2.0, 4.0)), ("0", ())],
)
def test_rps_eps_list_parses(text, parsed):
    from robattr_cli.config import parse_eps_list

    assert parse_eps_list(text) == parsed


@pytest.mark.parametrize("text", ["4,x", "-4", "4,4", "0,4"])
def test_rps_eps_list_rejects(text):
    from robattr_cli.config import parse_eps_list

    with pytest.raises(ConfigError, match="--rps-eps"):
        parse_eps_list(text)


def test_flags_reach_the_config(trained, tmp_path, monkeypatch):
    import robattr_cli.attack as attack_mod

    seen = {}

    def fake_run(cfg, runtime, run_dir):
        seen["cfg"] = cfg
        return {}

    monkeypatch.setattr(attack_mod, "run", fake_run)
    result = invoke(
        "attack", "--checkpoint", trained, "--attack", "frame", "--eps", "2", "--optimizer",
        "pgd", "--method", "smoothgrad", "--sg-samples", "7", "--k", "30", "--device", "cpu",
        "-o", tmp_path / "a",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    cfg = seen["cfg"]
    got = (cfg.eps, cfg.optimizer, cfg.method, cfg.sg_samples, cfg.k)
    assert got == (2, "pgd", "smoothgrad", 7, 30)
    assert cfg.n_iter == 100 and cfg.gamma == 0.5  # untouched defaults (official values)


def test_attack_off_a_terminal_prints_timestamped_progress_and_replays(trained, tmp_path, capsys):
    """Off a terminal (CliRunner, a log file) the attack prints timestamped lines with an
    ETA (`StepProgress`), always one at the end; `--config` of its config.json replays it."""
    out = tmp_path / "r"
    result = invoke(
        "attack", "--checkpoint", trained, "--attack", "random", "--n-draws", "1",
        "--num-examples", "6", "--batch-size", "3", "--device", "cpu", "-o", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    text = result.output + capsys.readouterr().err
    line = r"\[\d\d:\d\d:\d\d\] robattr attack random img 6/6 \(100\.0%\) \S+ img/s ETA 0s"
    assert re.search(line, text), text
    # stdout: the table eval prints, every number rounded to 4 decimals beside its interval
    assert re.search(
        r"similarity_to_clean/pcc\s+\d\.\d{4}\s+\[\d\.\d{4}, \d\.\d{4}\]", result.stdout
    )
    assert not re.search(r"\d\.\d{5,}", result.stdout), result.stdout
    replay = invoke("attack", "--config", out / "config.json", "--dry-run")
    assert replay.exit_code == 0, replay.output
    saved = json.loads((out / "config.json").read_text())["config"]
    assert json.loads(replay.stdout) == {"preset": None, "config": saved}
    result = invoke("eval", "--config", out / "config.json", "--dry-run")  # not eval's
    assert result.exit_code == 1 and "are not fields of EvalConfig" in result.output


def test_bad_options_fail_with_one_line(trained, tmp_path):
    result = invoke("attack", "--checkpoint", trained, "--attack", "nope", "-o", tmp_path / "x")
    assert result.exit_code == 1 and "--attack 'nope'" in result.output
    result = invoke("attack", "--checkpoint", trained, "--method", "intgrad", "-o", tmp_path / "y")
    assert result.exit_code == 1 and "--method 'intgrad' is unknown" in result.output
    result = invoke("eval", "--checkpoint", trained, "--attacked", tmp_path, "-o", tmp_path / "z")
    assert result.exit_code == 1 and "attacked.safetensors" in result.output
    result = invoke("attack", "--checkpoint", tmp_path, "-o", tmp_path / "w")
    assert result.exit_code == 1 and "checkpoint" in result.output


@pytest.mark.parametrize("command", ["attack", "eval"])
def test_a_failed_start_leaves_no_folder_and_the_corrected_rerun_works(trained, tmp_path, command):
    out = tmp_path / "out"
    quick = ["--num-examples", "2", "--n-draws", "1", "--device", "cpu", "-o", out]
    quick += ["--n-iter", "1", "--attack", "random"] if command == "attack" else ["--n-ratios", "0"]
    mistakes = [
        ["--checkpoint", tmp_path / "nowhere"],  # a missing file
        ["--checkpoint", trained, "--method", "gard"],  # a misspelt name
        ["--checkpoint", trained, "--which", "first"],  # a closed choice
        ["--checkpoint", trained, "--batch-size", "0"],  # a bad number
    ]
    if command == "eval":
        mistakes.append(["--checkpoint", trained, "--attacked", tmp_path])  # no attacked file
    for args in mistakes:
        result = invoke(command, *args, *quick)
        assert result.exit_code == 1 and "error:" in result.output, (args, result.output)
        assert not out.exists(), args
    result = invoke(command, "--checkpoint", trained, *quick)
    assert result.exit_code == 0, result.output
    header = json.loads((out / "config.json").read_text())
    assert (header["tool"], header["command"], header["preset"]) == ("robattr", command, None)
    assert header["config"]["checkpoint"] == str(trained) and header["runtime"]["device"] == "cpu"


def test_a_checkpoint_outside_its_run_needs_a_data_root(trained, tmp_path):
    """A CIFAR model copied out of its training run: the data root is asked for up front."""
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    step = next((trained / "checkpoints").glob("step-*"))
    (ckpt / "model.safetensors").write_bytes((step / "model.safetensors").read_bytes())
    meta = json.loads((step / "meta.json").read_text())
    (ckpt / "meta.json").write_text(json.dumps({**meta, "dataset": "cifar10"}))
    result = invoke("eval", "--checkpoint", ckpt, "--device", "cpu", "-o", tmp_path / "e")
    assert result.exit_code == 1 and "--data-root" in result.output and "cifar10" in result.output
    assert not (tmp_path / "e").exists()


@pytest.mark.parametrize("limit", [3, 7, 100])
def test_iter_examples_correct_only_batches_in_dataset_order(limit):
    from torch.utils.data import TensorDataset

    from robattr_cli.victim import iter_examples

    x = torch.arange(10.0).view(10, 1)
    y = torch.tensor([0, 1, 0, 0, 1, 1, 0, 1, 0, 0])  # the model below predicts class 0

    class AlwaysZero(torch.nn.Module):
        def forward(self, inp):
            return torch.stack([torch.ones(len(inp)), torch.zeros(len(inp))], 1)

    data = TensorDataset(x, y)
    batches = list(iter_examples(AlwaysZero(), data, limit, 2, "cpu", correct_only=True))
    correct = [0, 2, 3, 6, 8, 9][:limit]
    assert torch.cat([b[2] for b in batches]).tolist() == correct
    assert [len(b[1]) for b in batches] == [2] * (len(correct) // 2) + [1] * (len(correct) % 2)
    assert all(torch.equal(b[0].squeeze(1), b[2].float()) and (b[1] == 0).all() for b in batches)

    # the official sample: every example, misclassified ones included
    everything = list(iter_examples(AlwaysZero(), data, limit, 3, "cpu"))
    assert torch.cat([b[2] for b in everything]).tolist() == list(range(min(limit, 10)))
    assert torch.equal(torch.cat([b[1] for b in everything]), y[:limit])
    assert torch.equal(torch.cat([b[0] for b in everything]).squeeze(1), x[:limit, 0])


class _NearTie(torch.nn.Module):
    """Two logits 2**-10 apart: fp32 picks class 1, bf16 (8-bit mantissa) rounds the two
    weights together and picks class 0."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(16, 2, bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[1.0], [1.0 + 2**-10]]).expand(2, 16) / 16)

    def forward(self, x):
        return self.fc(x.flatten(1))


def test_correct_is_decided_once_in_fp32_whatever_the_precision(tmp_path, monkeypatch):
    """Under a bf16 runtime the model's own bf16 argmax calls every image wrong, fp32
    calls it right: clean accuracy, the correct-only filter and each image's
    clean_accuracy all read the one fp32 decision (issue 17: they disagreed)."""
    from torch.utils.data import TensorDataset

    from labshared.device import Precision, Runtime
    from robattr_cli import evaluate
    from robattr_cli.victim import iter_examples, predict

    model = _NearTie().eval()
    x, y = torch.rand(6, 1, 4, 4) + 0.5, torch.ones(6, dtype=torch.long)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert (model(x).argmax(1) == 0).all()  # bf16: all wrong
        assert (predict(model, x) == 1).all()  # the decision: fp32, all right
    data = TensorDataset(x, y)
    meta = {"checkpoint": "ck", "dataset": "mnist", "mean": [0.0], "std": [1.0]}
    box = PixelBox.from_stats([0.0], [1.0])
    monkeypatch.setattr(evaluate, "load_victim", lambda *a: (model, meta, data, box))
    bf16 = Runtime(torch.device("cpu"), Precision("bf16", torch.bfloat16, False), seed=0)
    cfg = evaluate.EvalConfig("ck", correct_only=True, batch_size=4, rps_eps=(), n_ratios=0, k=4)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # as a GPU run's surroundings would be
        metrics = evaluate.run(cfg, bf16, tmp_path)
    assert metrics["clean_accuracy"] == metrics["sample_clean_accuracy"] == 1.0
    assert metrics["num_examples"] == 6

    # given the split's predictions, the filter reads them and never calls the model
    class Refuses(torch.nn.Module):
        def forward(self, inp):
            raise AssertionError("the decision was made already")

    given = torch.tensor([1, 0, 1, 1, 0, 1])
    batches = list(iter_examples(Refuses(), data, None, 4, "cpu", True, predictions=given))
    assert torch.cat([b[2] for b in batches]).tolist() == [0, 2, 3, 5]
    assert all((b[3] == 1).all() for b in batches)


def test_eval_sends_its_final_metrics_to_report_to(trained, tmp_path):
    """Issue 15 item 3: `robattr eval --report-to tensorboard` logs the metrics.json numbers
    as one `final` line of metrics.jsonl and as TensorBoard scalars."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from labshared.training.metric_log import read_jsonl

    out = tmp_path / "eval"
    invoke("eval", "--checkpoint", trained, "--num-examples", "4", "--n-draws", "1",
           "--n-ratios", "0", "--report-to", "tensorboard", "-o", out)  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())
    (row,) = read_jsonl(out)
    assert row["final"]["clean_accuracy"] == pytest.approx(metrics["clean_accuracy"])
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    value = events.Scalars("final/clean_accuracy")[0].value
    assert value == pytest.approx(metrics["clean_accuracy"], rel=1e-6)
