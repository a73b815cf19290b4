"""Imports run one way: serving -> training -> constrained -> genrec.

Every import statement of every module is read with ``ast`` (lazy imports
inside functions included), so a layer cannot reach up, not even at call time.
serving's library modules (recommender, batch_job) serve a workdir without
training; only the CLI, which wires everything, may import any package.
"""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("genrec", "constrained", "training", "serving")

# Packages a module of each package must not import.
FORBIDDEN = {
    "genrec": {"constrained", "training", "serving"},
    "constrained": {"training", "serving"},
    "training": {"serving"},
    "serving": {"training"},
}
# Modules exempt from their package's rule: the CLI is the one place that wires everything.
MAY_IMPORT_ANYTHING = {"serving/cli.py"}


def imported_packages(path: Path) -> set[str]:
    """Top-level package names of every ``import`` / ``from ... import`` in ``path``."""
    packages = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            packages.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            packages.add(node.module.split(".")[0])
    return packages


def modules(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


def test_the_parser_sees_lazy_imports(tmp_path):
    source = tmp_path / "lazy.py"
    source.write_text("import os\n\ndef f():\n    from training.checkpoint import x\n    import serving.cli\n")
    assert imported_packages(source) == {"os", "training", "serving"}


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_run_one_way(package):
    assert modules(package), f"no modules found under {REPO / package}"
    violations = []
    for path in modules(package):
        relative = path.relative_to(REPO).as_posix()
        if relative in MAY_IMPORT_ANYTHING:
            continue
        for imported in sorted(imported_packages(path) & FORBIDDEN[package]):
            violations.append(f"{relative} imports {imported}")
    assert not violations, "imports against serving -> training -> constrained -> genrec:\n" + "\n".join(violations)
