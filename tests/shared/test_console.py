"""The stderr console: log lines reach a non-terminal stream (CI logs, `2> log.txt`) whole."""

import io

from labshared import console as console_module
from labshared.console import log


def test_a_long_log_line_is_one_line_off_a_terminal(monkeypatch):
    stream = io.StringIO()  # not a terminal: rich's default width there is 80 columns
    # `_file`, not the `file` property: undoing a property set would pin the console to
    # the stream stderr was at this moment instead of following sys.stderr again
    monkeypatch.setattr(console_module.console, "_file", stream)
    monkeypatch.delenv("COLUMNS", raising=False)
    path = "/a/very/long/cache/folder/" + "x" * 150 + "/tldr-phi-train-0123456789abcdef.safetensors"
    log(f"[dim]cache written: {path}[/dim]")
    log("two words", "and a second object")
    assert not console_module.console.is_terminal
    assert stream.getvalue() == f"cache written: {path}\ntwo words and a second object\n"
