"""The notebooks in notebooks/ run top to bottom, as a user runs them: each in a fresh Jupyter
kernel (nbclient), against a mesh and its domains over real HTTP, with nothing in the kernel's
environment but the mesh's URL (DATAMESH_URL) and an analyst's read-only token without PII
(DATAMESH_TOKEN). Any cell that raises fails the test. Every notebook runs on the sample data;
the lead scoring and the forecast also run on scale data (`datamesh seed --scale 20`: 400
orders over the 180 days before the as-of day), where their other branches run: the
cross-validation and the fitted Holt-Winters model. The committed notebooks carry no outputs,
tokens or machine paths."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import asyncpg
import jwt
import pytest

from services import PERSONAS, domain
from services.federation.app import create_app
from services.federation.settings import FederationSettings
from services.marketing import scale as marketing_scale
from services.sales import scale as sales_scale
from shared.serving.app import create_domain_app
from shared.settings import ServiceSettings
from shared.storage.sample_data import seed_if_empty
from tests.conftest import AS_OF, TEST_SECRET, create_database, owner_url, token
from tests.postgres import PostgresServer
from tests.servers import served

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
SCALE = 20
# what a notebook needs: every domain's products and the mesh, read-only, PII masked
SCOPES = PERSONAS["analyst"]

# (notebook, data) -> lines its outputs must hold: the sample's known figures, and which branch
# ran where a notebook adapts to its data
EXPECTED: dict[tuple[str, str], list[str]] = {
    ("01-first-steps", "sample"): [
        "8 completed orders over $50,000, $630,480.00 in all",
        "Parameter 'total_amount' has value 'lots'; column 'total_amount' expects a decimal number.",
    ],
    ("02-cross-domain-analyses", "sample"): [
        "Leads that became customers: 3",
        "Best return: Spring Analytics Webinar Series (Webinar): ROI 130.46% on $38,212.65 spent, "
        "$88,065.00 attributed",
        "5 of 8 campaigns have no attributed revenue yet",
        "Most revenue per dollar: Webinar, $1.90 back for each dollar spent",
    ],
    ("03-sales-dashboard", "sample"): [
        "Revenue over 7 months: $1,193,319.36; best month May 2024 with $235,254.26",
        "sales-summary: $1,193,319.36; orders by region: $1,193,319.36",
    ],
    ("04-customer-segmentation", "sample"): ["15 customers"],
    ("05-lead-scoring", "sample"): [
        "15 leads: 3 converted, 12 not",
        "Only 3 leads in the smaller class: no held-out evaluation would mean anything",
        "Converted leads' ranks by lead_score (1 = highest, of 15): [1, 2, 3]",
    ],
    ("06-revenue-forecast", "sample"): [
        "20 orders (Cancelled ones excluded) over 176 days",
        "Too short or too sparse for a daily Holt-Winters model",
        "No forecast: not enough history (see above).",
    ],
    ("05-lead-scoring", "scale"): ["400 leads: 16 converted, 384 not", "5-fold cross-validated"],
    ("06-revenue-forecast", "scale"): [
        "over 180 days",
        "Enough for a daily model with a weekly season.",
        "Revenue forecast for the next four weeks:",
    ],
}
PLOTS = {"01", "02", "03", "04", "06"}  # the notebooks that draw (06 also on the sample)


def _mesh(domains: dict[str, str]) -> Any:
    return served(create_app(FederationSettings.model_validate({"domains": domains})))


@pytest.fixture(scope="module")
def sample_mesh(domain_urls: dict[str, str]) -> Iterator[str]:
    """The mesh over the sample data, on a real port."""
    with _mesh(domain_urls) as url:
        yield url


@pytest.fixture(scope="module")
def scale_mesh(
    postgres_servers: dict[str, PostgresServer], settings: ServiceSettings
) -> Iterator[str]:
    """Both domains seeded at SCALE in databases of their own, served with a mesh over them."""
    generators = {"sales": sales_scale.generate, "marketing": marketing_scale.generate}
    urls = {}
    for name, generator in generators.items():
        url = create_database(postgres_servers, name, f"{name}_notebooks_scale", {})

        async def generate(conn: asyncpg.Connection, generator: Any = generator) -> None:
            await generator(conn, SCALE, AS_OF)

        assert asyncio.run(seed_if_empty(domain(name), owner_url(url), generate))
        urls[name] = url
    apps = {
        name: create_domain_app(domain(name), database_url=url, settings=settings)
        for name, url in urls.items()
    }
    with ExitStack() as stack:
        served_urls = {name: stack.enter_context(served(app)) for name, app in apps.items()}
        yield stack.enter_context(_mesh(served_urls))


@pytest.fixture(scope="module")
def jupyter_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Jupyter's and IPython's directories, away from the user's; a kernel spec that runs this
    interpreter (a user's own `python3` kernel spec could point at another one)."""
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "path" / "kernels" / "datamesh-tests"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": "DataMesh tests", "language": "python"})
    )
    (root / "work").mkdir()
    return {
        "JUPYTER_PATH": str(root / "path"),
        "JUPYTER_CONFIG_DIR": str(root / "config"),
        "JUPYTER_RUNTIME_DIR": str(root / "runtime"),
        "JUPYTER_DATA_DIR": str(root / "data"),
        "IPYTHONDIR": str(root / "ipython"),
        # Jupyter's new directory layout, without jupyter_core's warning that it is coming
        "JUPYTER_PLATFORM_DIRS": "1",
        "CWD": str(root / "work"),
    }


def _kernel_environment(url: str, dirs: dict[str, str]) -> dict[str, str]:
    """This process's environment without any DataMesh setting (the tests' signing secret
    among them), plus the mesh's URL, a token and Jupyter's directories."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATAMESH_", "MESH_"))}
    env.update({k: v for k, v in dirs.items() if k != "CWD"})
    env["DATAMESH_URL"] = url
    env["DATAMESH_TOKEN"] = token(*SCOPES, subject="notebook-tests")
    env["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    return env


def _run(path: Path, url: str, dirs: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    for key in ("JUPYTER_PATH", "JUPYTER_CONFIG_DIR", "JUPYTER_RUNTIME_DIR", "JUPYTER_DATA_DIR"):
        monkeypatch.setenv(key, dirs[key])
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        kernel_name="datamesh-tests",
        timeout=120,
        resources={"metadata": {"path": dirs["CWD"]}},
    )
    try:
        client.execute(env=_kernel_environment(url, dirs))
    except CellExecutionError as error:
        pytest.fail(f"{path.name} failed:\n{error}")
    return notebook


def _texts(notebook: Any) -> tuple[str, int]:
    """Every text a notebook's cells printed or displayed, and how many images they drew."""
    texts: list[str] = []
    images = 0
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if output["output_type"] == "stream":
                texts.append(output["text"])
            elif output["output_type"] in ("execute_result", "display_data"):
                data = output.get("data", {})
                images += "image/png" in data
                texts.append(data.get("text/plain", ""))
    return "\n".join(texts), images


def _check(notebook: Any, name: str, data: str) -> None:
    texts, images = _texts(notebook)
    for line in EXPECTED.get((name, data), []):
        assert line in texts, f"{name} on {data} data does not print {line!r}:\n{texts}"
    if name[:2] in PLOTS:
        assert images, f"{name} drew no plot"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_on_the_sample(
    path: Path, sample_mesh: str, jupyter_dirs: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    notebook = _run(path, sample_mesh, jupyter_dirs, monkeypatch)
    _check(notebook, path.stem, "sample")


SCALE_NOTEBOOKS = [
    NOTEBOOK_DIR / "05-lead-scoring.ipynb",
    NOTEBOOK_DIR / "06-revenue-forecast.ipynb",
]


@pytest.mark.parametrize("path", SCALE_NOTEBOOKS, ids=[p.stem for p in SCALE_NOTEBOOKS])
def test_notebook_runs_on_scale_data(
    path: Path, scale_mesh: str, jupyter_dirs: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    notebook = _run(path, scale_mesh, jupyter_dirs, monkeypatch)
    _check(notebook, path.stem, "scale")


def test_the_six_notebooks_are_there() -> None:
    assert [p.stem for p in NOTEBOOKS] == [
        "01-first-steps",
        "02-cross-domain-analyses",
        "03-sales-dashboard",
        "04-customer-segmentation",
        "05-lead-scoring",
        "06-revenue-forecast",
    ]
    assert {name for name, _ in EXPECTED} == {p.stem for p in NOTEBOOKS}


JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*")
MACHINE_PATH = re.compile(r"(/work|/tmp|/home|/root|/Users/|[A-Za-z]:\\\\)")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_notebook_is_clean(path: Path) -> None:
    """No outputs or execution counts (they would go stale and could leak data), no token, no
    machine path, no URL or token in code: `Mesh()` takes both from the environment."""
    import nbformat

    text = path.read_text(encoding="utf-8")
    notebook = nbformat.reads(text, as_version=4)
    nbformat.validate(notebook)
    assert set(notebook.metadata) <= {"kernelspec", "language_info"}, notebook.metadata
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name}: cell {cell.id} has outputs"
            assert cell.execution_count is None, f"{path.name}: cell {cell.id} was executed"
            assert "http" not in cell.source, f"{path.name}: cell {cell.id} names a URL"
            assert "token=" not in cell.source, f"{path.name}: cell {cell.id} passes a token"
            for arguments in re.findall(r"\bMesh\((.*?)\)", cell.source, re.DOTALL):
                assert not arguments.strip(), f"{path.name}: cell {cell.id}: Mesh({arguments})"
        assert set(cell.metadata) <= {"tags"}, f"{path.name}: cell {cell.id} {cell.metadata}"
    assert not JWT.search(text), f"{path.name} holds a token"
    assert not MACHINE_PATH.search(text), f"{path.name}: {MACHINE_PATH.search(text)}"
    assert "Mesh()" in text


def test_make_notebooks_starts_jupyter_with_a_token_for_the_mesh(sample_mesh: str) -> None:
    """`make notebooks` mints a read-only token without PII and starts Jupyter with it and the
    mesh's URL: here the "Jupyter" it starts reads the mesh with `Mesh()` as a notebook does."""
    root = NOTEBOOK_DIR.parent
    script = (
        "import os, sys; from datamesh import Mesh; mesh = Mesh(); "
        "print(mesh.count('sales', 'orders'), len(mesh.metric('campaign-roi')), sys.argv[1:]); "
        "print(os.environ['DATAMESH_TOKEN'])"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATAMESH_", "MESH_"))}
    env |= {"DATAMESH_JWT_SECRET": TEST_SECRET, "DATAMESH_URL": sample_mesh}
    done = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "-o",
            ".venv/.installed",  # never (re)install from here
            "notebooks",
            f"BIN={Path(sys.executable).parent}",
            f'JUPYTER={sys.executable} -c "{script}"',
        ],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    counts, minted = done.stdout.splitlines()
    assert counts == "20 8 ['lab', 'notebooks/']"
    claims = jwt.decode(minted, TEST_SECRET, algorithms=["HS256"], audience="datamesh")
    assert claims["sub"] == "notebooks"
    assert sorted(claims["scope"].split()) == sorted(SCOPES)
    assert claims["exp"] - claims["iat"] == 8 * 3600
