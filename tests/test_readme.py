"""The README's Quickstart is exactly two commands, and CI runs its test command verbatim."""

import pathlib
import re

import pytest

pytestmark = pytest.mark.fast

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _quickstart_commands():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line for line in block.splitlines() if line.strip()]


def test_quickstart_is_two_commands_install_and_train_then_install_and_test():
    train, test = _quickstart_commands()
    assert train.startswith("pip install") and train.endswith("kbatch-train")
    assert test.startswith("pip install") and "pytest" in test


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    command = re.search(r"^readme_test_command='(.*)'$", ci, re.M).group(1)
    assert command.replace("pip install -q", "pip install") == _quickstart_commands()[1]
