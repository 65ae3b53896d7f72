"""The trainer's layout shows its architecture: subpackages that import in one direction, no
import cycle, TensorFlow only where docs/training.md says, components that never import the
trainer, and docs/training.md's module table equal to the tree."""

import ast
import pathlib
import re

import pytest

pytestmark = pytest.mark.fast

REPO = pathlib.Path(__file__).resolve().parents[1]
TRAINING = REPO / "kbatch" / "training"
# Lowest first: a module may import the trainer's modules of its own layer or of a layer before it.
LAYERS = (
    ("stops", "tasks", "contrastive", "transforms", "rate_cap"),
    ("actions",),
    ("config",),
    ("run_files",),
    ("backends",),
    ("models_of_config", "self_training", "runner", "__init__"),
)
IMPORTS_TENSORFLOW = {
    "backends/tf_backend.py",
    "backends/ps_backend.py",
    "backends/tf_step.py",
    "backends/preemption.py",
    "run_files/summaries.py",
}
COMPONENTS = (
    "checks.py",
    "ledger.py",
    "scaling.py",
    "schedules.py",
    "layers",
    "optimizers",
    "models",
    "diagnostics",
    "data",
)


def _modules():
    return sorted(path.relative_to(TRAINING).as_posix() for path in TRAINING.rglob("*.py"))


def _layer(dotted):
    """The layer of `kbatch.training.<dotted>` (a module or a package)."""
    top = dotted.split(".")[0]
    return next(i for i, names in enumerate(LAYERS) if top in names)


def _imported(path):
    """The modules of `path`'s imports, dotted, wherever in the file they are (lazy ones too);
    `from package import name` counts as `package.name`."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def _own_modules(path):
    """The trainer's modules `path` imports, as paths relative to kbatch/training (no suffix)."""
    found = set()
    for name in _imported(path):
        if name.startswith("kbatch.training."):
            relative = name.removeprefix("kbatch.training.").replace(".", "/")
            if (TRAINING / f"{relative}.py").exists() or (TRAINING / relative).is_dir():
                found.add(relative)
    return found


@pytest.mark.parametrize("module", _modules())
def test_each_module_imports_only_its_own_layer_or_those_before_it(module):
    own = _layer(module.removesuffix(".py").replace("/", "."))
    upward = [name for name in _own_modules(TRAINING / module) if _layer(name.replace("/", ".")) > own]
    assert not upward, f"{module} (layer {LAYERS[own]}) imports {upward}, a later layer"


def test_no_module_of_the_trainer_imports_the_package_itself_or_its_names():
    for module in _modules():
        for node in ast.walk(ast.parse((TRAINING / module).read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "kbatch.training":
                names = [alias.name for alias in node.names]
                assert all((TRAINING / f"{n}.py").exists() or (TRAINING / n).is_dir() for n in names), (module, names)


def test_the_trainers_imports_have_no_cycle():
    graph = {m.removesuffix(".py"): set() for m in _modules()}
    for module in _modules():
        for name in _own_modules(TRAINING / module):
            target = name if name in graph else f"{name}/__init__"
            graph[module.removesuffix(".py")].add(target)
    done, visiting = set(), []

    def visit(node):
        assert node not in visiting, f"import cycle: {' -> '.join(visiting[visiting.index(node) :] + [node])}"
        if node not in done:
            visiting.append(node)
            for target in graph.get(node, ()):
                if not target.endswith("__init__") or target.removesuffix("/__init__") != node.rsplit("/", 1)[0]:
                    visit(target)
            visiting.pop()
            done.add(node)

    for node in graph:
        visit(node)


def test_tensorflow_is_imported_only_by_the_modules_the_docs_name():
    importing = {m for m in _modules() if any(n.split(".")[0] == "tensorflow" for n in _imported(TRAINING / m))}
    assert importing == IMPORTS_TENSORFLOW


def test_orbax_is_imported_only_by_the_jax_backends_checkpoint_files():
    """kbatch imports under TensorFlow without Orbax installed (it is in the `jax` extras only)."""
    importing = {
        path.relative_to(REPO).as_posix()
        for path in (REPO / "kbatch").rglob("*.py")
        if any(n.split(".")[0] == "orbax" for n in _imported(path))
    }
    assert importing == {"kbatch/training/backends/orbax_checkpoints.py"}


def test_components_never_import_the_trainer():
    for component in COMPONENTS:
        path = REPO / "kbatch" / component
        for file in [path] if path.is_file() else sorted(path.rglob("*.py")):
            assert not [n for n in _imported(file) if n.startswith("kbatch.training")], file


def test_the_docs_module_table_is_the_tree():
    text = (REPO / "docs" / "training.md").read_text()
    table = text[text.index("| module (`kbatch/training/`)") : text.index("\nBuilding a run is separate")]
    rows = [line for line in table.splitlines() if line.startswith("|")]
    named = {name for row in rows for name in re.findall(r"`([a-z_/]+\.py)`", row.split("|")[1])}
    in_tree = {m for m in _modules() if not m.endswith("__init__.py")}
    assert named == in_tree, f"missing from the table: {in_tree - named}; not in the tree: {named - in_tree}"


def test_no_function_of_kbatch_is_longer_than_a_screen():
    """Functions under 50 lines (issue 26): each fits on one screen, with its docstring."""
    long = [
        f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for path in sorted((REPO / "kbatch").rglob("*.py")) + [REPO / "kbatch_cli.py"]
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 50
    ]
    assert not long, long
