"""The package's layout is its architecture: imports run one way along the flow, at the top of each module, with
no circle; heavy libraries load when used, so that `inception-deploy --help` stays fast."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "inception_deploy"
# Each stage may import itself and the stages listed: core ← models, runners ← export ← compile; parity, bench and
# serving use what is below them and never each other; optimize, the whole flow in one call, uses bench, accuracy and
# serving; only the CLI (and the package's facade) sees everything.
ALLOWED = {
    "core": {"core"},
    "models": {"core", "models"},
    "runners": {"core", "models", "runners"},
    "export": {"core", "models", "runners", "export"},
    "compile": {"core", "models", "runners", "export", "compile"},
    "parity": {"core", "models", "runners", "export", "compile", "parity"},
    "bench": {"core", "models", "runners", "export", "compile", "bench"},
    "serving": {"core", "models", "runners", "export", "compile", "serving"},
    "accuracy": {"core", "models", "runners", "export", "compile", "accuracy"},
    "optimize": {"core", "models", "runners", "export", "compile", "bench", "serving", "accuracy", "optimize"},
    "cli": {"core", "models", "runners", "export", "compile", "parity", "bench", "serving", "accuracy", "optimize",
            "cli"},
    "__init__": {"core", "models", "export", "parity"},
    "__main__": {"launch"},
    "launch": {"core", "cli"},  # core.interrupts: SIGTERM and SIGHUP answered before the CLI is imported
}
# The one import inside a function: the console entry point imports the command line (and torch) where Ctrl-C
# during start-up can still be answered with one line.
LATE = {("inception_deploy.launch", "inception_deploy.cli")}
# Imported inside the functions that use them, or through core.deps.lazy_import / require: never at the top.
LAZY = {"onnx", "onnxruntime", "onnxsim", "onnxscript", "tensorrt", "tensorrt_rtx", "pytriton", "tritonclient",
        "matplotlib"}


def _module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, root: Path):
    """(target module, line, at top level) for every import of the package's own modules and of third parties."""
    tree = ast.parse(path.read_text())
    module = _module_name(path, root)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    top = {id(node) for node in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
                # `from ..pkg import name`: name may be a module of pkg (an edge to it) or a name in pkg (to pkg)
                names = [f"{target}.{a.name}" for a in node.names]
            else:
                names = [node.module]
            for name in names:
                yield name, node.lineno, id(node) in top
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno, id(node) in top


def _stage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _own(name: str, root: Path) -> str | None:
    """The package module an import names, or None for a third party (`inception_deploy.cli.common` -> itself)."""
    if not name.startswith("inception_deploy"):
        return None
    while name != "inception_deploy" and not (root.parent / (name.replace(".", "/") + ".py")).is_file() and \
            not (root.parent / name.replace(".", "/") / "__init__.py").is_file():
        name = name.rsplit(".", 1)[0]  # `from .export import export_onnx` names a function, not a module
    return name


def layout_problems(root: Path = PACKAGE) -> list[str]:
    problems, graph = [], {}
    for path in sorted(root.rglob("*.py")):
        module = _module_name(path, root)
        stage = "__main__" if path.name == "__main__.py" else _stage(module)
        allowed = ALLOWED[stage]
        graph.setdefault(module, set())
        for name, line, at_top in _imports(path, root):
            where = f"{path.relative_to(root.parent)}:{line}"
            own = _own(name, root)
            if own is None:
                if at_top and name.split(".")[0] in LAZY:
                    problems.append(f"{where} imports {name} at the top: import it where it is used")
                continue
            if not at_top and (module, own) not in LATE:
                problems.append(f"{where} imports {own} inside a function: the package's modules import at the top")
            target_stage = _stage(own) if own != "inception_deploy" else "__init__"
            if own != module and target_stage not in allowed:
                problems.append(f"{where}: {stage} may not import {target_stage} ({own})")
            if own != module:
                graph[module].add(own)
    problems += [f"import circle: {' -> '.join(c)}" for c in _circles(graph)]
    return problems


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, state = [], {}

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                found.append(stack[stack.index(nxt):] + [nxt] if nxt in stack else [node, nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def test_imports_run_one_way_at_the_top_without_circles():
    assert layout_problems() == []


def test_the_rule_catches_a_wrong_import(tmp_path):
    """The check itself can fail: a copy of the package where core imports bench, and parity imports bench."""
    import shutil

    copy = tmp_path / "inception_deploy"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    errors = copy / "core" / "errors.py"
    errors.write_text("from ..bench.sweep import run_bench\n" + errors.read_text())  # sweep imports core.errors
    check = copy / "parity" / "check.py"
    check.write_text(check.read_text().replace("import logging\n", "import logging\n\nimport onnxruntime\n", 1)
                     + "\n\ndef late():\n    from ..bench.plan import BenchPlan\n\n    return BenchPlan\n")
    localize = copy / "parity" / "localize.py"  # localize -> parity (its __init__) -> check -> localize
    localize.write_text(localize.read_text().replace("import logging\n", "import logging\n\nfrom ..parity import "
                                                                         "check_parity\n", 1))
    problems = layout_problems(copy)
    assert any("core/errors.py:1: core may not import bench" in p for p in problems), problems
    assert any(p.startswith("import circle") and "inception_deploy.parity.localize" in p for p in problems), problems
    assert any("parity/check.py" in p and "inside a function" in p for p in problems), problems
    assert any("parity may not import bench" in p for p in problems), problems
    assert any("imports onnxruntime at the top" in p for p in problems), problems
    assert any(p.startswith("import circle") for p in problems), problems  # core.errors -> bench -> core.errors


@pytest.mark.parametrize("command", [["--help"], ["bench", "--help"]])
def test_help_loads_no_heavy_library(command):
    code = ("import sys; from inception_deploy.cli import main; sys.argv = ['inception-deploy', *sys.argv[1:]]\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            f"heavy = sorted(m for m in {sorted(LAZY)!r} if m in sys.modules)\n"
            "print('HEAVY', heavy, file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", code, *command], capture_output=True, text=True, timeout=120)
    assert "HEAVY []" in result.stderr, result.stderr[-2000:]
