"""The `tldr` command line: wiring only; each command's work lives in its own module."""

from labshared.cli import make_app, run_app

from tldr_cli import __version__

app = make_app("tldr", "TLDR: debias an image classifier by retraining its last layer on LLM-generated words projected from CLIP's text space.", __version__)


def main() -> None:
    run_app(app)


if __name__ == "__main__":
    main()
