"""ERM training resumes exactly from its per-epoch checkpoint."""

import torch

from labshared.data.group_shift import load_toy
from labshared.device import setup_runtime
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
