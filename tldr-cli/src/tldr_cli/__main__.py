"""Allow `python -m tldr_cli`."""

from tldr_cli.cli import main

main()
