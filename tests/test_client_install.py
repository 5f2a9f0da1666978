"""The Python client installs alone: `pip install datamesh` into a fresh virtual environment
brings the client (httpx, pyarrow, pandas) and none of the server stack, and reads a product
and a metric through a running mesh."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from services.federation.app import create_app
from services.federation.settings import FederationSettings
from tests.checkout import copy_project
from tests.conftest import ADMIN, token
from tests.servers import served

ROOT = Path(__file__).resolve().parent.parent
SERVER_STACK = ("fastapi", "uvicorn", "sqlalchemy", "asyncpg", "alembic", "duckdb", "typer")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client_only(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with the project installed as an analyst would: no extra."""
    venv = tmp_path_factory.mktemp("client-venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    # built from a copy of the project's files: a build writes into the tree it builds
    source = copy_project(tmp_path_factory.mktemp("source"))
    python = venv / "bin" / "python"
    subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--constraint",
            str(ROOT / "constraints.txt"),
            str(source),
        ],
        check=True,
        timeout=600,
    )
    return python


@pytest.fixture(scope="module")
def mesh_url(domain_urls: dict[str, str]) -> Iterator[str]:
    app = create_app(FederationSettings.model_validate({"domains": domain_urls}))
    with served(app) as url:
        yield url


def run(python: Path, code: str) -> str:
    done = subprocess.run(
        [str(python), "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=python.parent,  # not the repository: the installed package, not the source tree
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_client_installs_without_the_server_stack(client_only: Path) -> None:
    found = run(
        client_only,
        f"""
        import importlib.util
        print(",".join(m for m in {SERVER_STACK!r} if importlib.util.find_spec(m)))
        """,
    )
    assert found == ""
    command = subprocess.run(
        [str(client_only.parent / "datamesh"), "up"], capture_output=True, text=True, timeout=60
    )
    assert command.returncode == 1
    assert "The datamesh command needs the server: pip install 'datamesh[server]'" in (
        command.stderr
    )


def test_the_client_alone_reads_a_product_and_a_metric(
    client_only: Path, mesh_url: str, domain_urls: dict[str, str]
) -> None:
    completed = httpx.get(
        f"{domain_urls['sales']}/sales/v1/orders",
        params={"order_status": "eq.Completed"},
        headers=ADMIN,
    ).json()
    analyst = token("sales:read", "marketing:read", "mesh:read", subject="notebook")
    out = run(
        client_only,
        f"""
        from datamesh import Mesh
        mesh = Mesh({mesh_url!r}, token={analyst!r})
        orders = mesh.read("sales", "orders", order_status="eq.Completed")
        cac = mesh.metric("customer-acquisition-cost")
        print(len(orders), str(orders["total_amount"].dtype), len(cac))
        """,
    )
    assert out == f"{len(completed)} float64 1"
