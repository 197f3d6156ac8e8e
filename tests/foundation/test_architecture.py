"""The import rules of the brief, checked on the source: a broken rule fails here first."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LIBRARIES = ("embedding", "features", "training", "serving")
STDLIB = set(sys.stdlib_module_names)


def _imports(path: Path, *, top_level_only: bool) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    if top_level_only:  # also look inside module-level if/try blocks (not functions)
        stack = list(nodes)
        nodes = []
        while stack:
            n = stack.pop()
            nodes.append(n)
            if isinstance(n, ast.If | ast.Try):
                stack.extend(n.body + n.orelse + getattr(n, "finalbody", []) + [x for h in getattr(n, "handlers", []) for x in h.body])
    found = []
    for n in nodes:
        if isinstance(n, ast.Import):
            found += [(n.lineno, a.name.split(".")[0]) for a in n.names]
        elif isinstance(n, ast.ImportFrom) and n.level == 0 and n.module:
            found.append((n.lineno, n.module.split(".")[0]))
    return found


def _py_files(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py")) if (REPO / package).is_dir() else []


def test_embedding_imports_only_torch_numpy_pillow_dlib() -> None:
    allowed = STDLIB | {"torch", "numpy", "PIL", "dlib", "embedding", "__future__"}
    bad = [f"{p.relative_to(REPO)}:{line} imports {mod}" for p in _py_files("embedding")
           for line, mod in _imports(p, top_level_only=False) if mod not in allowed]
    assert not bad, "embedding/ must run alone on a GPU box:\n" + "\n".join(bad)


@pytest.mark.parametrize("package", LIBRARIES)
def test_nothing_imports_flows(package: str) -> None:
    bad = [f"{p.relative_to(REPO)}:{line}" for p in _py_files(package)
           for line, mod in _imports(p, top_level_only=False) if mod == "flows"]
    assert not bad, "flows call the libraries, never the reverse:\n" + "\n".join(bad)


# The package picture, bottom to top: what each part may import of the project (anywhere in
# a file, inside functions too). The CLI (facesurv.cli) is the top and may import everything.
LAYERS: dict[str, set[str]] = {
    "ground": set(),
    "embedding": set(),
    "features": {"ground", "embedding"},
    "training": {"ground", "features"},
    "serving": {"ground", "embedding", "features", "training"},
    "facesurv.components": {"ground", "embedding", "features", "training", "serving"},
    "flows": {"ground", "embedding", "features", "training", "facesurv.components"},
    "demo": {"ground", "embedding", "features", "training", "serving", "facesurv.components", "flows"},
}
PROJECT = ("ground", "embedding", "features", "training", "serving", "flows", "facesurv", "demo")


def _part(module: str) -> str | None:
    """The LAYERS entry a dotted module name belongs to (None: not the project's)."""
    top = module.split(".")[0]
    if top == "facesurv":
        return "facesurv.components" if module.startswith("facesurv.components") else "facesurv"
    return top if top in PROJECT else None


def _files_of(part: str) -> list[Path]:
    return [REPO / "facesurv" / "components.py"] if part == "facesurv.components" else _py_files(part)


@pytest.mark.parametrize("part", list(LAYERS))
def test_each_part_imports_only_the_parts_below_it(part: str) -> None:
    allowed = LAYERS[part] | {part}
    bad = [f"{p.relative_to(REPO)}:{line} imports {mod}" for p in _files_of(part)
           for line, mod in _full_imports(p) if _part(mod) is not None and _part(mod) not in allowed]
    assert not bad, (f"{part} may import only {sorted(LAYERS[part])} of the project "
                     "(docs/architecture.md has the picture):\n" + "\n".join(bad))


def test_ground_imports_only_the_standard_library_yaml_numpy_and_pydantic() -> None:
    allowed = STDLIB | {"yaml", "numpy", "pydantic", "ground", "__future__"}
    bad = [f"{p.relative_to(REPO)}:{line} imports {mod}" for p in _py_files("ground")
           for line, mod in _imports(p, top_level_only=False) if mod not in allowed]
    assert not bad, "ground/ stands on nothing of the project or the heavy stack:\n" + "\n".join(bad)


def test_the_ground_does_not_live_in_the_cli_package() -> None:
    stray = sorted(p.name for p in (REPO / "facesurv").glob("*.py")
                   if p.name not in {"__init__.py", "__main__.py", "components.py"})
    assert not stray, f"facesurv/ holds the CLI and the composition root only; move these to ground/: {stray}"


def test_cli_modules_keep_heavy_imports_out_of_module_level() -> None:
    heavy = {"torch", "mlflow", "feast", "prefect", "great_expectations", "dvc", "pandas", "sksurv",
             "pycox", "fastapi", "dlib", "pyarrow", "sklearn", "matplotlib"}
    bad = [f"{p.relative_to(REPO)}:{line} imports {mod}" for p in _py_files("facesurv/cli")
           for line, mod in _imports(p, top_level_only=True) if mod in heavy]
    assert not bad, "keep `facesurv --help` fast:\n" + "\n".join(bad)


PROBE = r"""
import importlib, json, os, pkgutil, sys
# Third-party libraries may touch the environment when imported (mlflow sets a telemetry
# session id): import them first, so what is measured is what the project's modules do.
for lib in ("torch", "mlflow", "feast", "prefect", "great_expectations", "dvc.repo", "sksurv", "pycox", "fastapi"):
    try:
        importlib.import_module(lib)
    except ImportError:
        pass
before_env = dict(os.environ)
home = os.environ.get("HOME", "")
def listing(d):
    return sorted(os.path.relpath(os.path.join(r, f), d) for r, _, fs in os.walk(d) for f in fs) if os.path.isdir(d) else []
before_home = listing(home)
mods, errors = [], []
root = sys.argv[1]
for pkg in sys.argv[2:]:
    path = os.path.join(root, pkg)
    if not os.path.isdir(path):
        continue
    importlib.import_module(pkg)
    for info in pkgutil.walk_packages([path], prefix=pkg + "."):
        name = info.name
        if ".tests" in name or name.endswith("__main__"):
            continue
        try:
            importlib.import_module(name)
            mods.append(name)
        except ModuleNotFoundError as exc:
            errors.append(f"{name}: {exc}")
changed = sorted(k for k in set(before_env) | set(os.environ) if before_env.get(k) != os.environ.get(k))
new_home = sorted(set(listing(home)) - set(before_home))
print(json.dumps({"mods": mods, "errors": errors, "env": changed, "home": new_home}))
"""


@pytest.mark.slow
def test_importing_every_module_has_no_side_effects(tmp_path: Path) -> None:
    empty = tmp_path / "cwd"
    empty.mkdir()
    pkgs = list(PROJECT)
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path / "home")}
    r = subprocess.run([sys.executable, "-c", PROBE, str(REPO), *pkgs], cwd=empty, capture_output=True, text=True,
                       env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert not result["errors"], result["errors"]
    assert result["mods"]
    assert not result["env"], f"environment changed at import: {result['env']}"
    leftovers = [p.name for p in empty.iterdir()]
    assert not leftovers
    assert not result["home"], f"importing the project's modules wrote into $HOME: {result['home'][:10]}"


def _full_imports(path: Path) -> list[tuple[int, str]]:
    """(line, dotted module) of every absolute import anywhere in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for n in ast.walk(tree):
        if isinstance(n, ast.Import):
            found += [(n.lineno, a.name) for a in n.names]
        elif isinstance(n, ast.ImportFrom) and n.level == 0 and n.module:
            found.append((n.lineno, n.module))
    return found


@pytest.mark.parametrize("package", [*LIBRARIES, "ground", "flows", "demo", "facesurv"])
def test_only_the_cli_imports_the_cli(package: str) -> None:
    """The CLI is the top: library, flow, demo and ground code never import facesurv.cli."""
    bad = [f"{p.relative_to(REPO)}:{line} imports {mod}" for p in _py_files(package)
           if not (package == "facesurv" and ("cli" in p.relative_to(REPO / "facesurv").parts
                                              or p.name == "__main__.py"))
           for line, mod in _full_imports(p) if mod == "facesurv.cli" or mod.startswith("facesurv.cli.")]
    assert not bad, "only facesurv/cli and facesurv/__main__.py may import the CLI:\n" + "\n".join(bad)


def test_no_import_circle() -> None:
    """An import circle (a imports b ... imports a, at any depth, inside functions too) makes the
    package picture unreadable and its load order fragile."""
    modules = {}
    for package in PROJECT:
        for p in _py_files(package):
            name = ".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
            modules[name] = p
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        targets = set()
        for n in ast.walk(tree):
            if isinstance(n, ast.ImportFrom) and n.level == 0 and n.module:
                targets.add(n.module)
                targets.update(f"{n.module}.{a.name}" for a in n.names)
            elif isinstance(n, ast.Import):
                targets.update(a.name for a in n.names)
        graph[name] = {t for t in targets if t in modules and t != name and not name.startswith(t + ".")
                       and not t.startswith(name + ".")}
    # Tarjan's strongly connected components: any component of two or more modules is a circle
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                circles.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph) + 100))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not circles, "modules that import each other (through a circle):\n" + "\n".join(
        " <-> ".join(c) for c in circles)
