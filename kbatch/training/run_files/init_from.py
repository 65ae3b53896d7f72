"""The model a fine-tuning run starts from (`config.init_from`): a `.keras` file, or a run folder
holding the `model.keras` its run wrote. Checked before anything is written; read with
`keras.models.load_model` (kbatch's components are registered on import)."""

import os
import zipfile

import keras

from kbatch.training.run_files import run_dir


def model_path(init_from, field="init_from"):
    """The `.keras` file `init_from` names (a run folder: its `model.keras`); a ValueError in one
    line, naming `config.<field>`, when there is none, or it is not a Keras model file."""
    where = f"config.{field}={init_from!r}"
    path = os.path.join(init_from, run_dir.MODEL_FILE) if os.path.isdir(init_from) else init_from
    if os.path.isdir(init_from) and not os.path.isfile(path):
        raise ValueError(
            f"{where}: the folder holds no {run_dir.MODEL_FILE} (a run writes it when it finishes): "
            "name a finished run's folder or a .keras file."
        )
    if not os.path.exists(path):
        raise ValueError(f"{where}: no such file or folder; must be a .keras file or a finished run's folder.")
    if not path.endswith(".keras") or not zipfile.is_zipfile(path):
        raise ValueError(
            f"{where}: not a Keras model file; must be a .keras file (model.save) or a finished run's folder."
        )
    return path


def load(init_from, field="init_from"):
    """The model saved at `init_from` (see `model_path`), uncompiled."""
    path = model_path(init_from, field)
    try:
        return keras.models.load_model(path, compile=False)
    except Exception as error:  # Keras raises many kinds for a file it cannot read
        first = str(error).strip().splitlines()[0][:160] if str(error).strip() else type(error).__name__
        raise ValueError(f"config.{field}={init_from!r}: {path} does not load as a Keras model ({first}).") from None
