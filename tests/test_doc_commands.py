"""Every command in the README and docs/ still works: `kbatch-train` commands pass what `--check`
checks (every config field, the model built, nothing run), all in one process
(tests/check_commands.py, itself compared with `kbatch-train --check`), and the tools' and
benchmarks' commands name only flags the script defines. (The Quickstart's two commands are what
CI itself runs.)"""

import json
import os
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


def _kbatch_train_args(command):
    """The kbatch-train arguments of a documented command (the command the launcher starts, for
    `launch_local.py ... -- kbatch-train ...`), or None."""
    words = shlex.split(command)
    if words[0] == "kbatch-train":
        return words[1:]
    if "--" in words and words[words.index("--") + 1] == "kbatch-train":
        return words[words.index("--") + 2 :]
    return None


def _check_in_one_process(arg_lists, keras_backend=None):
    """{tuple(args): "ok" or the error} for each list, checked by tests/check_commands.py (on
    `keras_backend`, default this process's)."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    if keras_backend:
        env["KERAS_BACKEND"] = keras_backend
    run = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "check_commands.py")],
        input=json.dumps(arg_lists),
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-1500:]
    return dict(zip(map(tuple, arg_lists), json.loads(run.stdout.strip().splitlines()[-1])))


def _keras_backend(command):
    """The Keras backend a documented command's kbatch-train runs on: JAX where the launcher starts
    JAX processes (it sets KERAS_BACKEND=jax), else None (this process's)."""
    words = shlex.split(command)
    own = words[: words.index("--")] if "--" in words else []
    return "jax" if any(word.startswith("--jax_processes") for word in own) else None


@pytest.fixture(scope="module")
def kbatch_train_checks():
    """Every documented kbatch-train command checked in one process per Keras backend: TensorFlow imported once."""
    by_backend = {}
    for _, command in COMMANDS:
        if (args := _kbatch_train_args(command)) is not None:
            by_backend.setdefault(_keras_backend(command), []).append(args)
    checks = {}
    for backend, arg_lists in by_backend.items():
        checks.update(_check_in_one_process(arg_lists, backend))
    return checks


def _check_kbatch_train(args):
    run = subprocess.run(
        [sys.executable, "-m", "kbatch.train", *args, "--check"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    return run.returncode == 0 and "the config is valid" in run.stdout


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


def test_one_process_judges_a_command_as_kbatch_train_check_does():
    """The one-process check against `kbatch-train --check` itself, on a valid command and on two
    that are not (a field out of range; a norm that does not fit the model's channels)."""
    good = ["--config=configs/mnist1d_cnn.py", "--config.batch_size=512"]
    out_of_range = ["--config.batch_size=-3"]
    unbuildable = ["--config.norm=group", "--config.norm_groups=7"]
    checks = _check_in_one_process([good, out_of_range, unbuildable])
    assert checks[tuple(good)] == "ok" and _check_kbatch_train(good)
    for args in (out_of_range, unbuildable):
        assert checks[tuple(args)] != "ok" and not _check_kbatch_train(args)


@pytest.mark.parametrize("page, command", COMMANDS, ids=[f"{p}:{c[:60]}" for p, c in COMMANDS])
def test_a_documented_command_is_valid(page, command, kbatch_train_checks):
    args = _kbatch_train_args(command)
    if args is not None:
        assert kbatch_train_checks[tuple(args)] == "ok", f"{page}: {command}: {kbatch_train_checks[tuple(args)]}"
    words = shlex.split(command)
    if words[0] != "kbatch-train":
        script, flags = words[1], words[2:]
        assert _check_script_flags(script, flags[: flags.index("--")] if "--" in flags else flags)
