"""ERM training resumes exactly from its per-epoch checkpoint, and from the batch a
Ctrl-C stopped it at."""

import json
import os
import signal

import pytest
import torch

from labshared.data.group_shift import load_toy
from labshared.device import setup_runtime
from labshared.runs import list_checkpoints, load_checkpoint
from labshared.training import Interrupted
from labshared.training.metric_log import read_jsonl
from tldr_cli.classifier import build_classifier, load_classifier
from tldr_cli.config import ErmRecipe
from tldr_cli.erm import train_erm


def test_interrupted_erm_resumes_to_the_same_weights(tmp_path):
    data = load_toy("train", 24)
    runtime = setup_runtime("cpu", "fp32", 0)
    two = ErmRecipe("t", epochs=2, lr=0.05, weight_decay=1e-4, batch_size=8)
    one = ErmRecipe("t", epochs=1, lr=0.05, weight_decay=1e-4, batch_size=8)

    torch.manual_seed(0)
    full = train_erm(
        build_classifier("toy-cnn", 2), data, two, runtime, tmp_path / "a", dataset_kind="toy"
    )

    torch.manual_seed(0)
    train_erm(
        build_classifier("toy-cnn", 2), data, one, runtime, tmp_path / "b", dataset_kind="toy"
    )
    torch.manual_seed(123)  # the resumed run must not depend on the state it starts in
    resumed = train_erm(
        build_classifier("toy-cnn", 2),
        data,
        two,
        runtime,
        tmp_path / "b",
        dataset_kind="toy",
        resume=True,
    )
    for (k, v), w in zip(full.state_dict().items(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(v, w, rtol=0, atol=0, msg=k)
    loaded, meta = load_classifier(tmp_path / "b")
    assert meta["recipe"] == "t" and meta["arch"] == "toy-cnn"
    torch.testing.assert_close(loaded.fc.weight, full.fc.weight)


def _counting(data, signal_at=None):
    """`data` whose image loads are counted; a real SIGINT is sent while the image number
    `signal_at` loads (so inside that batch's step, as a Ctrl-C would)."""
    loads = []
    image = data.image

    def counted(i):
        loads.append(i)
        if len(loads) == signal_at:
            os.kill(os.getpid(), signal.SIGINT)
        return image(i)

    data.image = counted
    return loads


def test_ctrl_c_mid_epoch_saves_that_batch_and_resumes_bit_exact(tmp_path):
    """SIGINT in the 3rd of 4 batches of epoch 2: the checkpoint is that batch's (step 7),
    the run is marked interrupted; --resume redraws epoch 2's order from the generator
    state saved at its start, loads only the 8 images of the last batch, and ends with the
    weights of an uninterrupted run, bit for bit (num_workers=0)."""
    runtime = setup_runtime("cpu", "fp32", 0)
    recipe = ErmRecipe("t", epochs=3, lr=0.05, weight_decay=1e-4, batch_size=8)
    torch.manual_seed(0)
    full = train_erm(
        build_classifier("toy-cnn", 2), load_toy("train", 32), recipe, runtime,
        tmp_path / "a", dataset_kind="toy",
    )  # fmt: skip

    data = load_toy("train", 32)
    loads = _counting(data, signal_at=32 + 2 * 8 + 1)  # first image of epoch 2, batch 3
    torch.manual_seed(0)
    with pytest.raises(Interrupted, match="SIGINT: stopped at step 7") as info:
        train_erm(build_classifier("toy-cnn", 2), data, recipe, runtime, tmp_path / "b",
                  dataset_kind="toy")  # fmt: skip
    assert info.value.exit_code == 130
    assert len(loads) == 32 + 3 * 8  # stopped at the end of the signalled batch
    assert [c.name for c in list_checkpoints(tmp_path / "b")] == ["step-00000004",
                                                                   "step-00000007"]  # fmt: skip
    status = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert status == {"status": "interrupted", "step": 7}
    _, train_state, _ = load_checkpoint(tmp_path / "b" / "checkpoints" / "step-00000007")
    assert {"optimizer", "scaler", "ranks", "progress"} <= set(train_state)
    assert train_state["progress"]["epoch"] == 1 and train_state["progress"]["batch"] == 3

    data = load_toy("train", 32)
    loads = _counting(data)
    torch.manual_seed(123)  # the resumed run must not depend on the state it starts in
    resumed = train_erm(
        build_classifier("toy-cnn", 2), data, recipe, runtime, tmp_path / "b",
        dataset_kind="toy", resume=True,
    )  # fmt: skip
    assert len(loads) == 8 + 32  # the rest of epoch 2, then epoch 3: skipped batches unread
    for (k, v), w in zip(full.state_dict().items(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(v, w, rtol=0, atol=0, msg=k)
    steps = [row["step"] for row in read_jsonl(tmp_path / "b")]
    assert steps == list(range(1, 13))  # one history: 1-7 before, 8-12 after the resume
