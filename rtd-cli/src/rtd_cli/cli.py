"""The `rtd` command line: wiring only; each command's work lives in its own module."""

from labshared.cli import make_app, run_app

from rtd_cli import __version__

app = make_app("rtd", "RTD: fine-tune a CLIP text encoder on text triplets for zero-shot composed image retrieval, and evaluate Pic2Word / SEARLE / LinCIR with or without it.", __version__)


def main() -> None:
    run_app(app)


if __name__ == "__main__":
    main()
