"""The toy fits behind tldr's demo figures give the same bytes whatever torch thread count
the caller set (issue 17, item 7): the toy backbone's pretraining and ERM of the toy CNN
run at `labshared.threads.TOY_FIT_THREADS`. Control: the unpinned pretraining at 1 thread
gives other bytes than at 2 (conv weight gradients reduced per thread), so the pin is what
makes them equal."""

import hashlib

import pytest
import torch

from labshared.data.group_shift import load_toy
from labshared.device import setup_runtime
from labshared.threads import TOY_FIT_THREADS, pinned_threads
from tldr_cli import classifier, erm, toybackbone
from tldr_cli.classifier import build_classifier
from tldr_cli.config import ErmRecipe


def _digest(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for key, value in state.items():
        h.update(key.encode() + value.detach().contiguous().numpy().tobytes())
    return h.hexdigest()


@pytest.fixture
def threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_pinned_threads_restores_the_callers_count(threads):
    torch.set_num_threads(1)
    with pinned_threads():
        assert torch.get_num_threads() == TOY_FIT_THREADS == 2
    assert torch.get_num_threads() == 1


def test_toy_backbone_pretraining_does_not_depend_on_the_callers_threads(monkeypatch, threads):
    small = {**toybackbone.TOY_PRETRAIN, "n": 512, "epochs": 1}
    monkeypatch.setattr(toybackbone, "TOY_PRETRAIN", small)
    digests = []
    for n_threads in (1, 2):
        torch.set_num_threads(n_threads)
        state, _ = toybackbone._pretrain_toy_backbone()
        assert torch.get_num_threads() == n_threads
        digests.append(_digest(state))
    assert digests[0] == digests[1]
    torch.set_num_threads(1)
    unpinned, _ = toybackbone._pretrain_toy_backbone_pinned()  # what 1 thread alone gives
    assert _digest(unpinned) != digests[0]


def test_toy_erm_trains_at_the_pinned_threads(tmp_path, monkeypatch, threads):
    seen = set()
    forward = classifier.Classifier.forward

    def spy(self, x):
        seen.add(torch.get_num_threads())
        return forward(self, x)

    monkeypatch.setattr(classifier.Classifier, "forward", spy)
    data = load_toy("train", 24)
    recipe = ErmRecipe("t", epochs=1, lr=0.05, weight_decay=1e-4, batch_size=8)
    digests = []
    for n_threads in (1, 2):
        torch.set_num_threads(n_threads)
        torch.manual_seed(0)
        model = erm.train_erm(
            build_classifier("toy-cnn", 2), data, recipe, setup_runtime("cpu", "fp32", 0),
            tmp_path / str(n_threads), dataset_kind="toy",
        )  # fmt: skip
        assert torch.get_num_threads() == n_threads
        digests.append(_digest(model.state_dict()))
    assert seen == {TOY_FIT_THREADS}
    assert digests[0] == digests[1]
