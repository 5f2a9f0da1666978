"""The parts import only what ARCHITECTURE.md allows: the framework knows no service, a domain
knows no other domain nor the mesh, the mesh reads domains over HTTP only, and the client knows
neither the framework nor the services."""

from __future__ import annotations

import ast
from pathlib import Path

from services import DOMAINS

ROOT = Path(__file__).resolve().parent.parent


def _imports(path: Path) -> set[str]:
    """Every module a file imports (absolute names; relative imports are within its package)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return found


def _python_files(folder: str) -> list[Path]:
    return sorted(p for p in (ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts)


def _offences(folder: str, allowed: tuple[str, ...], ours: tuple[str, ...]) -> list[str]:
    """Imports of this project's packages (`ours`) that a folder's files may not make."""
    return [
        f"{path.relative_to(ROOT)} imports {module}"
        for path in _python_files(folder)
        for module in sorted(_imports(path))
        if module.split(".")[0] in ours
        and not any(module == a or module.startswith(f"{a}.") for a in allowed)
    ]


OURS = ("shared", "services", "migrations", "datamesh", "tests", "bench")


def test_the_framework_imports_only_itself() -> None:
    assert _offences("shared", ("shared",), OURS) == []


def test_a_domain_imports_the_framework_and_itself_only() -> None:
    for name in DOMAINS:
        assert _offences(f"services/{name}", ("shared", f"services.{name}"), OURS) == []


def test_the_mesh_reads_domains_over_http_only() -> None:
    # the registration (service names and ports for its default registry), never a domain's code
    allowed = ("shared", "services.federation", "services")
    offences = _offences("services/federation", allowed, OURS)
    offences += [
        f"services/federation imports {module}"
        for path in _python_files("services/federation")
        for module in _imports(path)
        if any(module == f"services.{d}" or module.startswith(f"services.{d}.") for d in DOMAINS)
    ]
    assert offences == []


def test_the_client_imports_neither_the_framework_nor_the_services() -> None:
    # datamesh/_cli.py, the command's shim, imports the CLI lazily inside its function
    offences = _offences("datamesh", ("datamesh",), OURS)
    assert offences == ["datamesh/_cli.py imports services.cli"]


# The framework's layers (ARCHITECTURE.md): each sub-package of shared/ imports the modules at the
# top of shared/ (settings, errors, sql, openapi, schedule) and the layers listed for it, never one
# above it, so that the import graph between them has no cycle.
LAYERS = {
    "telemetry": (),
    "declarations": (),
    "security": (),
    "storage": ("telemetry", "declarations"),
    "reading": ("telemetry", "declarations", "security", "storage"),
    "writing": ("telemetry", "declarations", "security", "storage", "reading"),
    "governance": ("telemetry", "declarations", "security", "storage", "reading"),
    "publishing": ("telemetry", "declarations", "security", "storage", "reading", "governance"),
    "serving": (
        "telemetry",
        "declarations",
        "security",
        "storage",
        "reading",
        "writing",
        "governance",
        "publishing",
    ),
}
TOP = tuple(
    f"shared.{p.stem}" for p in sorted((ROOT / "shared").glob("*.py")) if p.stem != "__init__"
)


def test_the_framework_is_its_layers_and_a_few_modules_at_the_top() -> None:
    packages = {p.name for p in (ROOT / "shared").iterdir() if (p / "__init__.py").exists()}
    assert packages == set(LAYERS)
    top = ("errors", "openapi", "schedule", "settings", "sql")
    assert [m.removeprefix("shared.") for m in TOP] == list(top)


def test_each_layer_of_the_framework_imports_only_the_layers_below_it() -> None:
    offences = []
    for layer, below in LAYERS.items():
        allowed = (f"shared.{layer}", *TOP, *(f"shared.{b}" for b in below))
        offences += _offences(f"shared/{layer}", allowed, OURS)
    # the modules at the top import none of the layers
    for path in (ROOT / "shared").glob("*.py"):
        offences += [
            f"{path.relative_to(ROOT)} imports {m}"
            for m in _imports(path)
            if m.startswith("shared.") and m not in TOP
        ]
    assert offences == []


def test_the_declarations_do_not_import_the_write_machinery() -> None:
    # shared.writing.inputs builds models from the declarations; the declarations import only what
    # declares (shared.declarations.writes), so the two never import each other
    declared = ROOT / "shared" / "declarations"
    assert {m for p in declared.rglob("*.py") for m in _imports(p) if m.startswith("shared.")} <= {
        "shared.errors",
        "shared.sql",
        "shared.declarations",
        "shared.declarations.products",
        "shared.declarations.writes",
        *(f"shared.declarations.checks.{p.stem}" for p in (declared / "checks").glob("*.py")),
        "shared.declarations.checks",
    }
