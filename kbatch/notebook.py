"""What the notebooks in colab/ share: run one of kbatch's tools with its output in the cell (a tool
that fails fails the cell, which a notebook's `!python ...` would not), show its files, and read a
run's TensorBoard scalars back.

    kbatch.notebook.quiet()                      # the log lines kbatch-train hides
    kbatch.notebook.run_tool("sweep", sweep_dir="/tmp/s", grid=["batch_size=64,256"], report_only=False)
    kbatch.notebook.show("/tmp/s/report.png")
    steps, rates = kbatch.notebook.scalars(model_dir, "train", "learning_rate")
"""

import logging
import os
import subprocess
import sys
import warnings

TOOLS = "tools"  # the repository's tools/ folder, relative to the notebook's working directory


def tool_command(tool, **flags):
    """The command line of `tools/<tool>.py` with `--name=value` per flag (a list repeats the
    flag, True is `--name`, False `--noname`, None leaves the flag out)."""
    command = [sys.executable, os.path.join(TOOLS, f"{tool}.py")]
    for name, value in flags.items():
        for one in (value if isinstance(value, (list, tuple)) else [value]):
            if one is True:
                command.append(f"--{name}")
            elif one is False:
                command.append(f"--no{name}")
            elif one is not None:
                command.append(f"--{name}={one}")
    return command


def run_tool(tool, **flags):
    """Run `tools/<tool>.py` with `flags`, printing its output as it comes; a RuntimeError with the
    tool's last line if it exits with an error."""
    command = tool_command(tool, **flags)
    if not os.path.isfile(command[1]):
        raise FileNotFoundError(f"{command[1]}: run the notebook from the repository's root (its setup cell does).")
    print("$", " ".join(command[1:]), flush=True)
    lines = []
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as process:
        for line in process.stdout:
            lines.append(line.rstrip())
            if not line.startswith(("WARNING: All log messages", "I0000", "W0000", "E0000")):
                print(line, end="", flush=True)
    if process.returncode:
        last = next((line for line in reversed(lines) if line.strip()), "no output")
        raise RuntimeError(f"tools/{tool}.py exited with code {process.returncode}: {last}")


def show(path):
    """Display a PNG or a markdown file in the notebook."""
    from IPython.display import Image, Markdown, display

    if path.endswith(".png"):
        display(Image(filename=path))
    else:
        with open(path) as file:
            display(Markdown(file.read()))


def quiet():
    """Hide what `kbatch-train` hides: TensorFlow's INFO logging and tf.data's warning that its
    options moved into the graph; kbatch's own lines and real warnings still show."""
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.WARNING)
    logging.getLogger("tensorflow").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message="To make it possible to preserve tf.data options")


def scalars(model_dir, group, name):
    """(steps, values) of the scalar `name` a run logged under `model_dir/group` (`train`, `eval`,
    `noise`, `diagnostics`, `examples`), read with TensorBoard's own loader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util.tensor_util import make_ndarray

    events = EventAccumulator(os.path.join(model_dir, group), size_guidance={"tensors": 0})
    events.Reload()
    if name not in events.Tags()["tensors"]:
        raise KeyError(f"{model_dir}/{group} has no scalar {name!r}; it has {', '.join(events.Tags()['tensors'])}.")
    points = events.Tensors(name)
    return [p.step for p in points], [float(make_ndarray(p.tensor_proto)) for p in points]
