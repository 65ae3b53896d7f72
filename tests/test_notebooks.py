"""The Colab notebooks (colab/*.ipynb) cannot rot: each is executed top to bottom on CPU with its
small setting (`SMALL = True` injected after its `parameters` cell, as papermill does) and fails
on any cell error, as a pip install runs it: from a folder outside the repository, with only the
package `kbatch` importable (no `tools`); each is committed without outputs, opens with its Colab badge and says what
was run where, and the README links it with the same badge."""

import os
import pathlib
import re

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = pathlib.Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "colab").glob("*.ipynb"))
BADGE = re.compile(
    r"\[!\[Open In Colab\]\(https://colab\.research\.google\.com/assets/colab-badge\.svg\)\]"
    r"\(https://colab\.research\.google\.com/github/([\w.-]+/[\w.-]+)/blob/main/(colab/[\w.-]+\.ipynb)\)"
)


def _read(path):
    return nbformat.read(path, as_version=4)


def _parameters_index(notebook):
    tagged = [i for i, c in enumerate(notebook.cells) if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters'"
    return tagged[0]


def test_the_four_notebooks_of_the_issue_are_there():
    assert [p.name for p in NOTEBOOKS] == [
        "01_quickstart.ipynb",
        "02_scaling_rules.ipynb",
        "03_normalization.ipynb",
        "04_noise_scale.ipynb",
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs_with_a_badge_and_what_ran_where(path):
    notebook = _read(path)
    nbformat.validate(notebook)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, "committed with outputs"
    first = notebook.cells[0].source
    badge = BADGE.search(first)
    assert badge and badge.group(2) == f"colab/{path.name}", "the first cell opens with its own Colab badge"
    assert "What was run where" in first
    parameters = notebook.cells[_parameters_index(notebook)].source
    assert re.search(r"^SMALL = False\b", parameters, re.M), "the full setting is the default"
    setup = "\n".join(c.source for c in notebook.cells if c.cell_type == "code")
    assert f'REPOSITORY = "https://github.com/{badge.group(1)}"' in setup, "installs from the badge's repository"


def test_the_readme_links_every_notebook_with_its_badge():
    readme = (ROOT / "README.md").read_text()
    linked = {match.group(2) for match in BADGE.finditer(readme)}
    assert linked == {f"colab/{p.name}" for p in NOTEBOOKS}


def _package_only(folder):
    """`folder` holding the package `kbatch` of this checkout and nothing else (what a pip install
    puts on the path: no `tools`, no `tests`)."""
    folder.mkdir()
    (folder / "kbatch").symlink_to(ROOT / "kbatch", target_is_directory=True)
    return folder


# The first cell the kernel runs: it works outside the repository, imports this checkout's kbatch
# and cannot import the repository's tools.
NO_REPOSITORY = """import importlib.util, os
assert not os.path.exists("tools") and importlib.util.find_spec("tools") is None, "tools/ is importable"
assert os.path.realpath(importlib.util.find_spec("kbatch").origin) == {origin!r}
"""


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_runs_top_to_bottom_with_its_small_setting_without_the_repository(path, tmp_path, monkeypatch):
    notebook = _read(path)
    small = nbformat.v4.new_code_cell(f"SMALL = True\nWORK_DIR = {str(tmp_path / 'runs')!r}")
    notebook.cells.insert(_parameters_index(notebook) + 1, small)
    origin = os.path.realpath(ROOT / "kbatch" / "__init__.py")
    notebook.cells.insert(0, nbformat.v4.new_code_cell(NO_REPOSITORY.format(origin=origin)))
    monkeypatch.setenv("KERAS_BACKEND", "auto")  # the notebook's own choice, as on Colab
    monkeypatch.setenv("PYTHONPATH", str(_package_only(tmp_path / "site")))
    (tmp_path / "cwd").mkdir()
    NotebookClient(
        notebook, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path / "cwd")}}
    ).execute()
    errors = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    assert list((tmp_path / "runs").rglob("result.json")), "it trained, and wrote under WORK_DIR"
