"""The `rtd` commands, one module each: the options come from the command's config
(`rtd_cli.config`, through `labshared.options.config_command`), then the workflow's
`check` (everything validated before a run folder exists) and `run`. `rtd_cli.cli` wires
them into the app; the models load only when a command runs, so `rtd --help` stays fast."""
