"""Allow `python -m robattr_cli`."""

from robattr_cli.cli import main

main()
