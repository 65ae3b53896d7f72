"""Run one of the scripts in tools/ as a user would: its own process, from the repository root."""

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_tool(script, flags, timeout=300, folder="tools"):
    """`python <folder>/<script> <flags>` (tools/ by default); the CompletedProcess, output captured as text."""
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run(
        [sys.executable, os.path.join(REPO, folder, script), *flags],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=REPO,
    )
