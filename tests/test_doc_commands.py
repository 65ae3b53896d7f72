"""Every command in the README and docs/ still works: `kbatch-train` commands pass `--check` (every
config field checked, nothing run), and the tools' and benchmarks' commands name only flags the
script defines. (The Quickstart's two commands are what CI itself runs.)"""

import pathlib
import re
import shlex
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def _commands():
    found = []
    for page in PAGES:
        for block in re.findall(r"```[a-z]*\n(.*?)```", page.read_text(), re.S):
            for line in block.replace("\\\n", " ").splitlines():
                line = line.split(" # ")[0].strip()
                if line.startswith("nice -n"):
                    line = line.split(maxsplit=3)[3]
                if line.startswith(("kbatch-train", "python tools/", "python benchmarks/")):
                    found.append((page.relative_to(ROOT).as_posix(), line))
    return found


COMMANDS = _commands()


def _check_kbatch_train(args):
    run = subprocess.run(
        [sys.executable, "-m", "kbatch.train", *args, "--check"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0 and "the config is valid" in run.stdout, run.stderr[-1500:]
    return True


def _check_script_flags(script, args):
    helped = subprocess.run(
        [sys.executable, script, "--helpfull"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    defined = set(re.findall(r"--(?:\[no\])?(\w+):", helped.stdout + helped.stderr))
    named = {arg[2:].split("=")[0] for arg in args if arg.startswith("--")}
    fields = {name.partition(".")[2] for name in named if name.startswith("config.")}
    assert defined, helped.stderr[-1500:]
    assert named - {f"config.{f}" for f in fields} <= defined, f"{script} has no flag {sorted(named - defined)}"
    from kbatch.training.config import schema

    assert not fields or "config" in defined, f"{script} has no --config flag"
    assert fields <= set(schema.NAMES), f"{script}: no config field {sorted(fields - set(schema.NAMES))}"
    return True


def test_the_pages_have_commands():
    assert len(COMMANDS) >= 15 and any(c.startswith("kbatch-train") for _, c in COMMANDS)


@pytest.mark.parametrize("page, command", COMMANDS, ids=[f"{p}:{c[:60]}" for p, c in COMMANDS])
def test_a_documented_command_is_valid(page, command):
    words = shlex.split(command)
    if words[0] == "kbatch-train":
        assert _check_kbatch_train(words[1:])
        return
    script, args = words[1], words[2:]
    if "--" in args:  # the launcher: its own flags, then the command it starts
        inner = args[args.index("--") + 1 :]
        args = args[: args.index("--")]
        if inner[0] == "kbatch-train":
            assert _check_kbatch_train(inner[1:])
    assert _check_script_flags(script, args)
