"""What the notebooks in colab/ share: the log lines kbatch-train hides hidden, a report's files
shown, and a run's TensorBoard scalars read back. The studies themselves are library calls
(`kbatch.study.studies`), so a notebook needs kbatch installed, not the repository's tools/.

    kbatch.notebook.quiet()                      # the log lines kbatch-train hides
    kbatch.study.studies.sweep("/tmp/s", config, {"batch_size": [64, 256]}, targets=[0.9])
    kbatch.notebook.show("/tmp/s/report.png")
    steps, rates = kbatch.notebook.scalars(model_dir, "train", "learning_rate")
"""

import logging
import os
import warnings


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
