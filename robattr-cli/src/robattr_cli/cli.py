"""The `robattr` command line: wiring only; each command's work lives in its own module."""

from labshared.cli import make_app, run_app

from robattr_cli import __version__

app = make_app("robattr", "Robust feature attribution by local gradient alignment: train, attack attribution maps, and measure their robustness.", __version__)


def main() -> None:
    run_app(app)


if __name__ == "__main__":
    main()
