"""One module per `robattr` command, each thin: its options are its config's fields
(`robattr_cli.config`, through `labshared.options.config_command`), and its body runs the
workflow's `check` (before the run folder exists) and `run`."""

#: The run-level options of `attack` and `eval`: `labshared.options.EVAL_RUN` less
#: --no-cache, which they do not use (robattr caches nothing; a flag is never ignored).
EVALUATION_RUN = ("device", "precision", "seed", "deterministic", "output_dir", "overwrite",
                  "report_to")  # fmt: skip
