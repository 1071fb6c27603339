"""Allow `python -m rtd_cli`."""

from rtd_cli.cli import main

main()
