"""Model registry, the ReLU -> Softplus transform, checkpoint reloading, and the presets."""

import dataclasses

import pytest
import torch
from torch import nn

from labshared.data.image_classification import DATASETS
from labshared.errors import ConfigError
from labshared.runs import save_checkpoint
from robattr_cli.config import PRESETS, parse_milestones, resolve_config
from robattr_cli.model import MODELS, build_model, load_trained, model_meta, swap_activation


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_builds_with_softplus_only(name):
    spec = MODELS[name]
    classes = 100 if name == "resnet18" else 10
    side = spec.image_size or 32
    model = build_model(name, classes, "softplus", 3.0).eval()
    out = model(torch.randn(2, spec.in_channels, side, side))
    assert out.shape == (2, classes)
    kinds = {type(m) for m in model.modules()}
    assert nn.ReLU not in kinds and nn.Softplus in kinds
    assert all(m.beta == 3.0 for m in model.modules() if isinstance(m, nn.Softplus))


def test_lenet_matches_the_official_layer_sizes():
    model = build_model("lenet", 10)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.padding) for c in convs] == [
        (3, 32, (3, 3), (1, 1)),
        (32, 32, (3, 3), (1, 1)),
        (32, 64, (3, 3), (1, 1)),
        (64, 64, (3, 3), (1, 1)),
    ]
    linears = [(m.in_features, m.out_features) for m in model.modules() if isinstance(m, nn.Linear)]
    assert linears == [(4096, 256), (256, 10)]


def test_resnet18_cifar_is_the_kuangliu_layout():
    model = build_model("resnet18-cifar", 10)
    stem = model.stem[0]
    assert stem.kernel_size == (3, 3) and stem.stride == (1, 1)
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    blocks = [m for m in model.modules() if type(m).__name__ == "BasicBlock"]
    assert len(blocks) == 8
    # 11.17 M parameters, the figure usually quoted for this CIFAR ResNet-18
    assert sum(p.numel() for p in model.parameters()) == 11_173_962


def test_swap_activation_is_recursive_and_exact():
    torch.manual_seed(0)
    inner = nn.Sequential(nn.Linear(3, 4), nn.ReLU())
    model = nn.Sequential(inner, nn.Sequential(nn.Linear(4, 2), nn.ReLU(inplace=True)))
    x = torch.randn(5, 3)
    swap_activation(model, "softplus", beta=3.0)
    h = torch.log1p(torch.exp(3.0 * model[0][0](x))) / 3.0  # softplus_beta by hand
    expect = torch.log1p(torch.exp(3.0 * model[1][0](h))) / 3.0
    torch.testing.assert_close(model(x), expect)
    swap_activation(model, "relu")
    assert all(not m.inplace for m in model.modules() if isinstance(m, nn.ReLU))
    assert not any(isinstance(m, nn.Softplus) for m in model.modules())
    with pytest.raises(ConfigError, match="--activation"):
        swap_activation(model, "gelu")
    with pytest.raises(ConfigError, match="beta"):
        swap_activation(model, "softplus", beta=0.0)


def test_unknown_model_suggests_the_closest_name():
    with pytest.raises(ConfigError, match="did you mean 'resnet18-cifar'"):
        build_model("resnet18_cifar", 10)


@pytest.mark.parametrize("activation", ["softplus", "relu"])
def test_load_trained_rebuilds_from_meta(tmp_path, activation):
    info = DATASETS["cifar10"]
    model = build_model("lenet", 10, activation, 5.0)
    meta = model_meta("lenet", 10, activation, 5.0, info)
    save_checkpoint(tmp_path, 7, model.state_dict(), None, meta)
    loaded, got = load_trained(tmp_path, "cpu")
    assert got["std"] == list(info.std) and got["step"] == 7 and got["dataset"] == "cifar10"
    assert not loaded.training
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(loaded(x), model.eval()(x))
    acts = [m for m in loaded.modules() if isinstance(m, nn.ReLU | nn.Softplus)]
    assert all(isinstance(m, nn.Softplus if activation == "softplus" else nn.ReLU) for m in acts)


def test_load_trained_errors_name_the_problem(tmp_path):
    with pytest.raises(ConfigError, match="no checkpoint there"):
        load_trained(tmp_path)
    save_checkpoint(tmp_path, 1, build_model("lenet", 10).state_dict(), None, {"model": "lenet"})
    with pytest.raises(ConfigError, match="fields num_classes, activation"):
        load_trained(tmp_path)
    meta = model_meta("mnist-cnn", 10, "softplus", 3.0, DATASETS["mnist"])
    save_checkpoint(tmp_path, 2, build_model("lenet", 10).state_dict(), None, meta)
    with pytest.raises(ConfigError, match="weights do not match the mnist-cnn of meta.json"):
        load_trained(tmp_path)
    with pytest.raises(ConfigError, match="checkpoints/best"):
        load_trained(tmp_path, which="best")


# --------------------------------------------------------------------------- presets
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_is_valid_and_fits_its_dataset(name):
    cfg = resolve_config(name, None, None, {})
    assert cfg == PRESETS[name] and cfg.preset == name
    assert cfg.grad_clip == 0.5 and cfg.activation == "softplus" and cfg.beta == 3.0
    assert cfg.regularizer == "l2cos" and cfg.detach_clean_grad and cfg.perturb == "uniform"


def test_paper_presets_match_the_official_scripts():
    table = {
        "cifar10-lenet": ("adam", 4e-5, 300, (100, 150), 0.01, 1.0, 1e-3),
        "cifar10-resnet18": ("adamw", 1e-2, 200, (100, 150), 0.01, 0.1, 1e-4),
        "imagenet100-resnet18": ("adamw", 1e-2, 90, (40, 60, 80), 1.0, 0.01, 1e-3),
    }
    for name, row in table.items():
        cfg = PRESETS[name]
        got = (cfg.optimizer, cfg.weight_decay, cfg.epochs, cfg.milestones)
        got += (cfg.lambda_l2, cfg.lambda_cos, cfg.lambda_hessian)
        assert got == row, name
        assert (cfg.lr, cfg.batch_size, cfg.eval_batch_size, cfg.eps) == (1e-3, 128, 100, 4.0)


def test_flags_override_the_preset_and_none_keeps_it():
    cfg = resolve_config(None, "cifar10", "resnet18-cifar", {"lr": 0.1, "eps": None})
    assert cfg.preset == "cifar10-resnet18" and cfg.lr == 0.1 and cfg.eps == 4.0
    assert parse_milestones("100, 150") == (100, 150) and parse_milestones("") == ()
    with pytest.raises(ConfigError, match="--milestones"):
        resolve_config("mnist-toy", None, None, {"milestones": (5, 3)})
    with pytest.raises(ConfigError, match="--eps 0 with --regularizer cos"):
        resolve_config("mnist-toy", None, None, {"eps": 0.0, "regularizer": "cos"})
    with pytest.raises(ConfigError, match="--model resnet18-cifar takes 3 x 32"):
        resolve_config(None, "imagenet100", "resnet18-cifar", {})


def test_a_resume_starts_from_the_saved_config_and_applies_the_flags_passed():
    """The saved run replaces the preset (no flags needed); a flag passed shows up in the
    resolved config, where `start_run` compares it with the saved one."""
    saved = dataclasses.replace(PRESETS["mnist-toy"], max_steps=3, lr=0.02, toy_seed=1)
    assert resolve_config(None, None, None, {"lr": None, "num_workers": None}, saved) == saved
    cfg = resolve_config(None, None, None, {"num_workers": 2, "lambda_cos": 0.5}, saved)
    assert cfg == dataclasses.replace(saved, num_workers=2, lambda_cos=0.5)
    assert resolve_config("cifar10-lenet", None, None, {}, saved).preset == "cifar10-lenet"
    with pytest.raises(ConfigError, match="--eps 0 with --regularizer l2cos"):
        resolve_config(None, None, None, {"eps": 0.0}, saved)


def test_unknown_names_say_the_flag_and_the_closest_name():
    with pytest.raises(ConfigError, match="--preset 'mnist-tyo' is unknown.*mean 'mnist-toy'"):
        resolve_config("mnist-tyo", None, None, {})
    with pytest.raises(ConfigError, match="--dataset 'cifar' is unknown.*did you mean 'cifar10'"):
        resolve_config(None, "cifar", None, {})
    with pytest.raises(ConfigError, match="--optimizer 'adamm' is unknown.*did you mean 'adam'"):
        resolve_config("mnist-toy", None, None, {"optimizer": "adamm"})
    with pytest.raises(ConfigError, match="--model 'lenet5' is unknown.*did you mean 'lenet'"):
        resolve_config(None, "cifar10", "lenet5", {})
    # a (dataset, model) pair without a paper preset starts from the dataclass defaults
    cfg = resolve_config(None, "cifar10", "resnet18", {"epochs": 2})
    assert (cfg.preset, cfg.dataset, cfg.model, cfg.epochs) == ("custom", "cifar10", "resnet18", 2)


def test_elementary_batchnorm_matches_torch_and_allows_third_order_backward():
    from robattr_cli.model import ElementaryBatchNorm2d, use_elementary_batchnorm
    from robattr_cli.regularizers import hessian_term

    torch.manual_seed(0)

    def net():
        return nn.Sequential(
            nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.Softplus(beta=3.0), nn.Flatten(),
            nn.Linear(3 * 4 * 4, 4),
        ).double()  # fmt: skip

    ref = net()
    with torch.no_grad():
        ref[1].weight.uniform_(0.5, 1.5)
        ref[1].bias.uniform_(-0.5, 0.5)
    model = net()
    model.load_state_dict(ref.state_dict())
    use_elementary_batchnorm(model)
    assert type(model[1]) is ElementaryBatchNorm2d
    assert model.state_dict().keys() == ref.state_dict().keys()
    x = torch.randn(5, 2, 6, 6, dtype=torch.float64)
    for _ in range(2):  # train mode: batch statistics and running-stat updates agree
        torch.testing.assert_close(model(x), ref(x))
    for key in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(model[1], key), getattr(ref[1], key))
    model.eval(), ref.eval()
    torch.testing.assert_close(model(x), ref(x))

    model.train(), ref.train()
    y, v = torch.tensor([0, 1, 2, 3, 0]), torch.randn_like(x)
    hessian_term(model, x, y, v).backward()  # third order through BN
    assert model[0].weight.grad.abs().sum() > 0
    with pytest.raises(RuntimeError, match="3rd"):
        hessian_term(ref, x, y, v).backward()
