"""Attacks stay in their budget and the valid range; top-k never returns a flipped label."""

import pytest
import torch
from torch import nn

from labshared.errors import ConfigError
from robattr_cli.attributions import heatmap
from robattr_cli.manipulation import (
    PixelBox,
    attack_surrogate,
    frame_attack,
    frame_target,
    random_perturbation,
    rps_similarity,
    topk_attack,
)

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)


def relu_cnn(seed: int = 0, classes: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(6, 6, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(6 * 6 * 6, classes),
    ).eval()


@pytest.fixture
def setup():
    box = PixelBox.from_stats(MEAN, STD)
    g = torch.Generator().manual_seed(0)
    pixels = torch.rand(4, 3, 12, 12, generator=g)
    pixels[:, :, :3] = 0.0  # rows at the edges of the valid range
    pixels[:, :, -3:] = 1.0
    x = (pixels - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    model = relu_cnn()
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y, box


def assert_in_budget(x_adv, x, box, eps):
    r = box.radius(eps)
    assert torch.all((x_adv - x).abs() <= r + 1e-6), "outside the eps-ball"
    assert torch.all(x_adv >= box.low - 1e-6) and torch.all(x_adv <= box.high + 1e-6)
    pixels = x_adv * box.std + (-box.low * box.std)  # back to [0, 1] pixel units
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5


def test_pixel_box_radius_is_per_channel():
    box = PixelBox.from_stats(MEAN, STD)
    torch.testing.assert_close(box.radius(4).flatten(), 4 / 255 / torch.tensor(STD))
    torch.testing.assert_close(box.low.flatten(), -torch.tensor(MEAN) / torch.tensor(STD))


def test_frame_target_official_sizes():
    t32 = frame_target(32, 32)
    assert t32.sum() == 32 * 32 - 22 * 22 and t32[5:27, 5:27].sum() == 0 and t32[4, 10] == 1
    t224 = frame_target(224, 224)
    assert t224[35:189, 35:189].sum() == 0 and t224[34, 100] == 1


@pytest.mark.parametrize("optimizer", ["adam", "pgd"])
def test_frame_attack_stays_in_budget_and_moves_towards_the_frame(setup, optimizer):
    model, x, y, box = setup
    sur = attack_surrogate(model)
    target = frame_target(12, 12, border=2)
    x_adv = frame_attack(sur, x, y, box, eps=8, n_iter=15, optimizer=optimizer, target_map=target)
    assert_in_budget(x_adv, x, box, 8)
    before = (heatmap(sur, x, y) - target).pow(2).sum()
    after = (heatmap(sur, x_adv, y) - target).pow(2).sum()
    assert after < before


def test_surrogate_is_a_smooth_copy_and_model_untouched(setup):
    model, x, y, box = setup
    state = {k: v.clone() for k, v in model.state_dict().items()}
    sur = attack_surrogate(model)
    assert sur is not model
    assert not any(isinstance(m, nn.ReLU) for m in sur.modules())
    assert sum(isinstance(m, nn.Softplus) and m.beta == 20 for m in sur.modules()) == 2
    frame_attack(sur, x, y, box, n_iter=2)
    assert sum(isinstance(m, nn.ReLU) for m in model.modules()) == 2
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k])
    smooth = nn.Sequential(nn.Linear(2, 2), nn.Softplus(beta=3.0))
    assert attack_surrogate(smooth) is smooth


def test_topk_attack_keeps_labels_and_lowers_intersection(setup):
    model, x, y, box = setup
    # a large budget so that many iterates flip the (fragile, random) model's label
    res = topk_attack(model, x, y, box, eps=64, n_iter=12, step_size=16, k=20)
    assert_in_budget(res.x_adv, x, box, 64)
    with torch.no_grad():
        assert torch.equal(model(res.x_adv).argmax(1), model(x).argmax(1))
    assert res.rejected.sum() > 0, "the test needs some label-flipping iterates"
    assert torch.all(res.intersection <= 1) and res.intersection.min() < 1
    # the reported intersection is that of the returned input, on the real model
    from robattr_cli.metrics import topk_intersection

    h0, h = heatmap(model, x, y, normalize="sum"), heatmap(model, res.x_adv, y, normalize="sum")
    torch.testing.assert_close(topk_intersection(h, h0, 20), res.intersection)


def test_topk_attack_reuses_the_descent_map_without_changing_the_result(setup):
    """A smooth model is its own surrogate, and each iterate is then scored with the map
    computed for the next step; an identical copy as surrogate forces the separate
    scoring pass, and both must pick the same iterates."""
    import copy

    _, x, _, box = setup
    smooth = attack_surrogate(relu_cnn(seed=3), beta=3.0)
    with torch.no_grad():
        y = smooth(x).argmax(1)
    fast = topk_attack(smooth, x, y, box, eps=64, n_iter=6, step_size=16, k=20)
    slow = topk_attack(
        smooth, x, y, box, surrogate=copy.deepcopy(smooth), eps=64, n_iter=6, step_size=16, k=20
    )
    assert fast.intersection.min() < 1, "the attack must move some map for the test to bite"
    torch.testing.assert_close(fast.x_adv, slow.x_adv)
    torch.testing.assert_close(fast.intersection, slow.intersection)
    assert torch.equal(fast.rejected, slow.rejected)


def test_topk_attack_returns_clean_input_when_every_iterate_flips(setup):
    _, x, y, box = setup

    class Flipper(nn.Module):  # class 0 only very near x (smooth, so the map has gradients)
        def __init__(self, x0):
            super().__init__()
            self.x0 = x0
            self.w = torch.randn(x0[0].shape, generator=torch.Generator().manual_seed(1))

        def forward(self, z):
            lin = (z * self.w).flatten(1).sum(1)
            dist = (z - self.x0).pow(2).flatten(1).sum(1)
            return torch.stack([1 + lin - 1e3 * dist, lin], 1)

    model = Flipper(x).eval()
    with torch.no_grad():
        y0 = model(x).argmax(1)
    res = topk_attack(model, x, y0, box, eps=8, n_iter=3, k=10)
    assert torch.equal(res.x_adv, x) and torch.all(res.rejected == 3)
    assert torch.all(res.intersection == 1)


def test_random_perturbation_range_and_seed(setup):
    _, x, _, box = setup
    a = random_perturbation(x, box, 8, torch.Generator().manual_seed(3))
    b = random_perturbation(x, box, 8, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert_in_budget(a, x, box, 8)
    assert (a - x).abs().max() > 0.5 * box.radius(8).min()  # it does move


def test_rps_with_zero_budget_is_perfect_similarity(setup):
    model, x, y, box = setup
    rep = rps_similarity(model, x, y, box, eps=0, n_draws=2, k=10)
    torch.testing.assert_close(rep["pcc"], torch.ones(4))
    torch.testing.assert_close(rep["topk"], torch.ones(4))
    noisy = rps_similarity(model, x, y, box, eps=16, n_draws=2, k=10,
                           noise_generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert noisy["pcc"].mean() < 1


def test_bad_options_are_config_errors(setup):
    model, x, y, box = setup
    with pytest.raises(ConfigError, match="--optimizer"):
        frame_attack(model, x, y, box, optimizer="sgd")
    with pytest.raises(ConfigError, match="--eps"):
        topk_attack(model, x, y, box, eps=-1)
    with pytest.raises(ConfigError, match="--k"):
        topk_attack(model, x, y, box, k=10_000, n_iter=1)
