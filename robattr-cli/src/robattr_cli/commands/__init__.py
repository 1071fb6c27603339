"""One module per `robattr` command, each thin: its options are its config's fields
(`robattr_cli.config`, through `labshared.options.config_command`), and its body runs the
workflow's `check` (before the run folder exists) and `run`."""
