"""The README's method map names real code: every `file.py:name` in it is an attribute of
that module (so a rename cannot leave the map pointing nowhere)."""

import importlib
import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "robattr-cli" / "README.md"


def test_every_file_function_of_the_method_map_exists():
    text = README.read_text()
    section = text[text.index("## Method map") : text.index("## Install")]
    refs = re.findall(r"`([a-z_]+)\.py:([A-Za-z_]+)`", section)
    assert len(refs) >= 20
    for module, name in refs:
        mod = importlib.import_module(f"robattr_cli.{module}")
        assert hasattr(mod, name), f"{module}.py:{name} (README method map) does not exist"
