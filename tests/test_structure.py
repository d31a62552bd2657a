"""The import graph of ``study`` and ``analysis``: data flows one way and nothing imports in a
circle; the analysis reads results without the training stack; the modules that describe and
validate a study stay light.

The graph is read statically (``ast``), counting every ``import`` and ``from ... import``:
module level, inside functions and under ``if TYPE_CHECKING:`` alike, relative imports
resolved. ``from package import name`` is an edge to ``package.name`` where that is a module,
else to ``package``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("study", "analysis")
TRAINING_STACK = ("torch", "ray")
ANALYSIS_MAY_IMPORT = {"study.results", "study.catalog", "study.report_options",
                       "study.logit_stats", "study.data.registry"}


@cache
def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of :data:`PACKAGES`."""
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _imported_names(name: str, path: Path) -> set[str]:
    """Every dotted name ``name`` imports, relative imports made absolute; for ``from base
    import x`` both ``base.x`` and ``base`` (resolved against the known modules later)."""
    is_package = path.name == "__init__.py"
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = name if is_package else name.rpartition(".")[0]
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                base = f"{package}.{base}" if base else package
            modules = _modules()
            names.update(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                         for alias in node.names)
    return names


def _internal(dotted: str) -> str | None:
    """The module of :data:`PACKAGES` that importing ``dotted`` names (its longest prefix
    that is a module), or ``None`` for a third-party or standard-library module."""
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in _modules():
            return ".".join(parts[:end])
    return None


@cache
def _graph() -> dict[str, tuple[set[str], set[str]]]:
    """Module -> (modules of the packages it imports, top-level names of everything else)."""
    graph = {}
    for name, path in _modules().items():
        imported = _imported_names(name, path)
        internal = {m for m in map(_internal, imported) if m is not None and m != name}
        external = {d.split(".")[0] for d in imported if _internal(d) is None}
        graph[name] = (internal, external)
    return graph


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (``[a, b, ..., a]``) per strongly connected component with more than one
    module (Tarjan's algorithm, then a shortest path back to the component's first module)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.add(top)
                if top == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(edges):
        if node not in index:
            visit(node)
    cycles = []
    for component in components:
        start = min(component)
        paths = {start: [start]}
        frontier = [start]
        while frontier and start not in {n for f in frontier for n in edges[f]}:
            step = []
            for node in frontier:
                for nxt in sorted(edges[node] & component):
                    if nxt not in paths:
                        paths[nxt] = paths[node] + [nxt]
                        step.append(nxt)
            frontier = step
        last = next(f for f in frontier if start in edges[f])
        cycles.append(paths[last] + [start])
    return cycles


def test_cycle_finder_finds_a_planted_cycle():
    """The checker itself: a -> b -> c -> a is found, a chain and a self-import are not."""
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"d"}}
    assert _cycles(edges) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_reads_relative_and_function_level_imports():
    """The reader sees what the packages actually contain: a relative import of
    ``study.objectives`` and the lazy import of the dataset registry in ``study.spec``."""
    assert "study.objectives.mixup" in _graph()["study.objectives"][0]
    assert "study.data.registry" in _graph()["study.spec"][0]


def test_no_module_imports_in_a_circle():
    """Every import counted (function-level too): the graph of ``study`` and ``analysis`` is
    acyclic, so data flows one way (spec -> trials -> results -> analysis)."""
    cycles = _cycles({name: internal for name, (internal, _) in _graph().items()})
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_analysis_reads_results_without_the_training_stack():
    """``analysis`` imports from ``study`` only ``study.results``, ``study.catalog`` and
    ``study.report_options``, and nothing it reaches (directly or through them) imports torch
    or Ray."""
    graph = _graph()
    analysis = [name for name in graph if name.split(".")[0] == "analysis"]
    wrong = {name: sorted(m for m in graph[name][0] if m.split(".")[0] == "study"
                          and m not in ANALYSIS_MAY_IMPORT) for name in analysis}
    assert not any(wrong.values()), {k: v for k, v in wrong.items() if v}
    reached, todo = set(), list(analysis)
    while todo:
        name = todo.pop()
        if name not in reached:
            reached.add(name)
            todo.extend(graph[name][0])
    heavy = {name: sorted(set(TRAINING_STACK) & graph[name][1]) for name in reached}
    assert not any(heavy.values()), {k: v for k, v in heavy.items() if v}


def test_objectives_never_import_ray():
    """The objectives are plain PyTorch: usable without the scheduler."""
    graph = _graph()
    assert [name for name in graph
            if name.split(".")[:2] == ["study", "objectives"] and "ray" in graph[name][1]] == []


def _loaded_in_a_fresh_interpreter(code: str, names: tuple[str, ...]) -> list[str]:
    """Which of ``names`` are in ``sys.modules`` after running ``code`` in a new interpreter."""
    probe = f"import sys\n{code}\nprint(' '.join(m for m in {names!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                            text=True, timeout=120, check=True)
    return result.stdout.split()


@pytest.mark.parametrize(("module", "forbidden"), [
    ("study.spec", TRAINING_STACK),
    ("study.catalog", TRAINING_STACK),
    ("study.models.presets", TRAINING_STACK),
    ("study.profiles", TRAINING_STACK),
    ("study.data.registry", (*TRAINING_STACK, "numpy", "scipy", "SimpleITK")),
    ("study.data.inline", (*TRAINING_STACK, "numpy", "scipy", "SimpleITK")),
    ("study.logit_stats", (*TRAINING_STACK, "pandas", "scipy")),
    ("study.data.presets", (*TRAINING_STACK, "numpy", "scipy", "SimpleITK")),
    ("study.report_options", (*TRAINING_STACK, "pandas", "pyarrow", "numpy")),
    ("study.run_options", TRAINING_STACK),
    ("study.stored_plan", TRAINING_STACK),
    ("study.status", TRAINING_STACK),
    ("study.processes", (*TRAINING_STACK, "numpy", "pyarrow", "SimpleITK", "yaml")),
])
def test_light_modules_import_nothing_heavy(module, forbidden):
    """Importing ``module`` in a fresh interpreter leaves ``forbidden`` out of
    ``sys.modules``: describing and validating a study needs no training or imaging stack."""
    assert _loaded_in_a_fresh_interpreter(f"import {module}", forbidden) == []


def test_validating_a_study_file_imports_no_training_stack(tiny_study_path):
    """``load_study`` checks dataset names against the registry and model names against the
    presets without importing torch or Ray."""
    code = f"from study.spec import load_study\nload_study({str(tiny_study_path)!r})"
    assert _loaded_in_a_fresh_interpreter(code, TRAINING_STACK) == []


# The driver's commands in one fresh interpreter, Ray replaced by a stop where it would start:
# prints the first command after which torch was loaded ("None": none).
_DRIVER_PROBE = """
import sys
from study import optimize, orchestrate
from study.cli import main

class BeforeRay(BaseException):
    pass

def before_ray(*args, **kwargs):
    raise BeforeRay

orchestrate.ensure_ray = optimize.ensure_ray = before_ray
storage, tiny, real = sys.argv[1:]
first = None
for argv, expected in [
        (["plan", tiny, "--json"], 0),
        (["status", "tiny", "--storage", storage], 0),
        (["launch", tiny, "--storage", storage, "--device", "cpu"], "ray"),
        (["launch", tiny, "--storage", storage, "--device", "cpu", "--mode", "optimize"], "ray"),
        (["resume", "tiny", "--storage", storage], "ray"),
        (["launch", real, "--storage", storage, "--device", "cpu"], 2)]:
    try:
        status = main(argv)
    except BeforeRay:
        status = "ray"
    assert status == expected, (argv, status, expected)
    if first is None and "torch" in sys.modules:
        first = " ".join(argv[:2])
    if argv[0] == "resume":  # every trial stored (diverged): a relaunch starts no Ray
        from datetime import datetime, timezone
        from study.expand import expand
        from study.results import ResultStore, identity_columns
        from study.spec import load_study
        from study.stored_plan import study_uri

        store = ResultStore(study_uri(storage, "tiny") + "/results")
        now = datetime.now(timezone.utc)
        for trial in expand(load_study(tiny)):
            store.write_trial({**identity_columns(trial.as_param()), "status": "diverged",
                               "started_at": now, "finished_at": now}, [])
        assert main(["launch", tiny, "--storage", storage, "--device", "cpu"]) == 0
print(f"torch first loaded by: {first}")
"""


def test_the_driver_never_imports_torch(tmp_path, tiny_spec, tiny_study_path):
    """``study plan``, ``status``, ``launch`` (grid and optimize mode) and ``resume`` up to
    where Ray starts, a relaunch of the study once every trial is stored (it starts no Ray),
    and a launch refused by the dataset check (a real dataset's empty folder: the loader and
    ``dataset_info`` run), in a fresh interpreter: none imports torch, which only the Tune
    workers load (``study.orchestrate.run_in_worker``)."""
    from helpers import real_study_file

    from study.expand import expand
    from study.run_options import RunOptions
    from study.stored_plan import Plan, study_uri

    storage = tmp_path / "storage"
    uri = study_uri(str(storage), "tiny")
    options = RunOptions(data_dir=str(storage / "data"), results_uri=f"{uri}/results")
    Plan.create("tiny", [t.as_param() for t in expand(tiny_spec)], options, str(storage),
                cpus_per_trial=1, gpus_per_trial=0).save(uri)
    (tmp_path / "empty").mkdir()
    real = real_study_file(tmp_path, tmp_path / "empty")
    done = subprocess.run([sys.executable, "-c", _DRIVER_PROBE, str(storage),
                           str(tiny_study_path), str(real)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "torch first loaded by: None", done.stdout[-2000:]
