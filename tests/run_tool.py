"""Run one of the scripts in tools/ or benchmarks/ as a user would: its own process, from the
repository root; forked from a server that imported TensorFlow, Keras and kbatch once
(tests/forked.py), so a run costs its own work and not those imports again."""

import os

import forked

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_tool(script, flags, timeout=300, folder="tools"):
    """`python <folder>/<script> <flags>` (tools/ by default); the CompletedProcess, output captured as text."""
    return forked.run([os.path.join(REPO, folder, script), *flags], cwd=REPO, timeout=timeout)
