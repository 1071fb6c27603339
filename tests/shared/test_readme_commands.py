"""The root README's offline commands run as written, in order, in a fresh folder with
the environment activated as the README says (issue 18, item 5).

`readme_commands()` takes every `robattr`, `tldr` and `rtd` command from the README's
bash blocks (continuation lines joined, comments dropped), leaving out those that need
downloaded data or a GPU cluster (`/data`, `...` placeholders, torchrun, `--model` of an
LLM). The test runs them one after another with `bash` after `source <venv>/bin/activate`,
each exactly as written plus, unless `README_COMMANDS_FULL=1`, the size flags of
`SMALL` (fewer epochs, steps and examples: the tests' tiny settings), so that the
sequence of folders, files and flags is the README's own. By hand, from the repository
root:

    README_COMMANDS_FULL=1 .venv/bin/python -m pytest -m slow tests/shared/test_readme_commands.py
"""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
TOOLS = ("robattr", "tldr", "rtd")
NEEDS_MORE = ("/data", "...", "torchrun", "--model ", "SEARLE_", "LLM_triplets")

# Appended to each command (by tool and command) unless README_COMMANDS_FULL=1.
SMALL = {
    ("robattr", "train"): "--epochs 1 --limit-train 256 --limit-eval 64",
    ("robattr", "attack"): "--num-examples 8 --n-iter 3 --batch-size 8",
    ("robattr", "eval"): "--n-draws 2 --n-ratios 4 --batch-size 8",
    ("tldr", "filter"): "--toy-n-train 200",
    ("tldr", "retrain"): "--toy-n-train 200 --toy-n-val 40 --toy-n-test 40",
    ("rtd", "train-phi"): "--steps 5 --batch-size 16",
    ("rtd", "train"): "--steps 5 --batch-size 8",
    ("rtd", "eval"): "--toy-queries 50 --toy-distractors 50",
}


def readme_commands(text: str) -> list[str]:
    """The offline tool commands of the README's bash blocks, in order."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            command = re.sub(r"\s+#.*$", "", line).strip()
            words = command.split()
            if words and words[0] in TOOLS and not any(m in command for m in NEEDS_MORE):
                commands.append(" ".join(words))
    return commands


def test_the_readme_lists_each_tools_offline_sequence():
    commands = readme_commands(README.read_text())
    assert [c.split()[:2] for c in commands] == [
        ["robattr", "train"], ["robattr", "attack"], ["robattr", "eval"],
        ["robattr", "train"], ["robattr", "attack"], ["robattr", "eval"], ["robattr", "compare"],
        ["tldr", "generate"], ["tldr", "filter"], ["tldr", "retrain"], ["tldr", "compare"],
        ["rtd", "train-phi"], ["rtd", "eval"], ["rtd", "train"], ["rtd", "eval"],
        ["rtd", "compare"],
    ]  # fmt: skip
    rtd_evals = [c for c in commands if c.startswith("rtd eval")]
    assert all("--split test" in c for c in rtd_evals)  # the split of the figures beside them
    assert "source .venv/bin/activate" in README.read_text()


@pytest.mark.slow
def test_the_readme_commands_run_as_written(tmp_path):
    full = os.environ.get("README_COMMANDS_FULL") == "1"
    venv_bin = Path(sys.executable).parent
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    for command in readme_commands(README.read_text()):
        tool, name = command.split()[:2]
        extra = "" if full else SMALL.get((tool, name), "")
        script = f"source {shlex.quote(str(venv_bin / 'activate'))}\n{command} {extra}"
        proc = subprocess.run(
            ["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
            timeout=3600,
        )  # fmt: skip
        assert proc.returncode == 0, f"{command} {extra}\n{proc.stderr[-3000:]}"
    assert (tmp_path / "runs" / "toy-eval-rtd" / "metrics.json").is_file()
    assert (tmp_path / "runs" / "toy-retrain" / "metrics.json").is_file()
    assert (tmp_path / "runs" / "toy-eval" / "metrics.json").is_file()
