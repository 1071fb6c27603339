"""`rtd train-phi`: the `PhiConfig` fields are the options; the work is
`rtd_cli.train_phi`'s `check` and `run`."""

from labshared.config import RUNTIME_KNOBS
from labshared.options import TRAINING_RUN, RunFlags, config_command
from rtd_cli import config as C
from rtd_cli.commands.training import StopAfterOpt, run_training
from rtd_cli.config import PhiConfig


@config_command(PhiConfig, presets=C.PHI_PRESETS, default_preset="lincir-vit-l14",
                run=TRAINING_RUN, validate=C.validate_phi, renamed=C.RENAMED_PRESETS)  # fmt: skip
def train_phi_cmd(cfg: PhiConfig, run: RunFlags, stop_after: StopAfterOpt = None) -> None:
    """Train the projection phi LinCIR-style on captions only (keyword masking + MSE).

    Presets: lincir-vit-l14 (LinCIR's README run: 8 processes x 64, gradients averaged),
    lincir-vit-bigg14, lincir-vit-b32 (its values on those backbones), toy. The lincir
    presets need spaCy and en_core_web_sm (LinCIR's masking) unless --keywords builtin.
    """
    # open_clip and the models load only when a command runs, so `rtd --help` stays fast
    from rtd_cli import train_phi

    keys = ("step", "loss", "stopped", "phi", "keywords", "slot_fallbacks")
    run_training("train-phi", train_phi, cfg, run, stop_after, keys, RUNTIME_KNOBS,
                 C.PHI_PRESET_PROCESSES)  # fmt: skip
