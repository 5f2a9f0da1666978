"""The `datamesh` command: start the whole mesh, migrate, load sample data."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Annotated

import httpx
import typer

from services import DOMAINS, domain, sample
from shared import migrations
from shared.embedded import EmbeddedPostgres
from shared.sample_data import load_if_empty
from shared.settings import MeshSettings, database_url_for

cli = typer.Typer(
    help="DataMesh: domain data products over REST, joined by the mesh.", no_args_is_help=True
)

DEFAULT_PORTS = {"mesh": 8000, "sales": 8001, "marketing": 8002}

DataDir = Annotated[
    Path | None,
    typer.Option(
        help="Where embedded databases live (env DATAMESH_DATA_DIR; default ./.datamesh)."
    ),
]
AsOf = Annotated[
    str | None,
    typer.Option(help="Last day of the sample's six months, YYYY-MM-DD (default: today)."),
]


@dataclass
class DomainDatabase:
    """Where a domain's database is, and the embedded server behind it if we started one."""

    name: str
    url: str
    server: EmbeddedPostgres | None


def _as_of(value: str | None) -> dt.date:
    if value is None:
        return dt.date.today()
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(
            f"'{value}' is not a date like 2024-10-18", param_hint="--as-of"
        ) from None


def _start_databases(data_dir: Path) -> list[DomainDatabase]:
    started: list[DomainDatabase] = []
    try:
        for name in DOMAINS:
            url = database_url_for(name)
            if url:
                started.append(DomainDatabase(name, url, None))
                continue
            server = EmbeddedPostgres(data_dir / "postgres", name)
            server.start((domain(name).database,))
            started.append(DomainDatabase(name, server.url(domain(name).database), server))
    except BaseException:
        _stop_databases(started)
        raise
    return started


def _stop_databases(databases: list[DomainDatabase]) -> None:
    for database in databases:
        if database.server:
            database.server.stop()


def _prepare(databases: list[DomainDatabase], as_of: dt.date) -> None:
    for database in databases:
        migrations.upgrade(database.name, database.url)
        rows = sample(database.name)(as_of)
        loaded = asyncio.run(load_if_empty(domain(database.name), database.url, rows))
        state = f"loaded sample data as of {as_of}" if loaded else "kept existing data"
        typer.echo(f"  {database.name:<10} migrated; {state}")


@cli.command()
def up(
    data_dir: DataDir = None,
    as_of: AsOf = None,
    host: Annotated[str, typer.Option(help="Interface the services listen on.")] = "127.0.0.1",
    port_mesh: Annotated[int, typer.Option(envvar="DATAMESH_PORT_MESH")] = DEFAULT_PORTS["mesh"],
    port_sales: Annotated[int, typer.Option(envvar="DATAMESH_PORT_SALES")] = DEFAULT_PORTS["sales"],
    port_marketing: Annotated[int, typer.Option(envvar="DATAMESH_PORT_MARKETING")] = DEFAULT_PORTS[
        "marketing"
    ],
) -> None:
    """Start both domain databases, migrate, load sample data if empty, serve everything."""
    settings = MeshSettings()
    root = (data_dir or settings.data_dir).resolve()
    ports = {"sales": port_sales, "marketing": port_marketing, "mesh": port_mesh}
    stopping = False

    def _stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    started = time.monotonic()
    typer.echo(f"DataMesh: data in {root}")
    databases = _start_databases(root)
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        _prepare(databases, _as_of(as_of))
        base = {name: f"http://{host}:{ports[name]}" for name in ports}
        env = dict(os.environ)
        for database in databases:
            env[f"{database.name.upper()}_DATABASE_URL"] = database.url
        env["MESH_DOMAINS"] = "{" + ", ".join(f'"{n}": "{base[n]}"' for n in DOMAINS) + "}"
        apps = {name: f"services.{name}.app:app" for name in DOMAINS} | {
            "mesh": "services.federation.app:app"
        }
        for name, target in apps.items():
            processes[name] = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    target,
                    "--host",
                    host,
                    "--port",
                    str(ports[name]),
                ],
                env=env,
                start_new_session=True,
            )
        _wait_ready(base, processes, lambda: stopping)
        typer.echo(f"\nDataMesh is up in {time.monotonic() - started:.1f}s:")
        for name in ("mesh", *DOMAINS):
            typer.echo(f"  {name:<10} {base[name]}/{name}/    docs: {base[name]}/{name}/docs")
        typer.echo("Press Ctrl-C to stop.")
        while not stopping:
            for name, process in processes.items():
                if process.poll() is not None:
                    typer.echo(
                        f"the {name} service exited with code {process.returncode}", err=True
                    )
                    stopping = True
            time.sleep(0.2)
    finally:
        typer.echo("Stopping DataMesh...")
        _terminate(processes)
        _stop_databases(databases)
        typer.echo("Stopped.")


def _wait_ready(
    base: dict[str, str],
    processes: dict[str, subprocess.Popen[bytes]],
    stopping: Callable[[], bool],
) -> None:
    deadline = time.monotonic() + 60
    pending = dict(base)
    while pending:
        if time.monotonic() > deadline:
            raise RuntimeError(f"services did not become ready in 60s: {', '.join(pending)}")
        for name in list(pending):
            if processes[name].poll() is not None:
                raise RuntimeError(
                    f"the {name} service exited with code {processes[name].returncode}"
                )
            try:
                response = httpx.get(f"{pending[name]}/{name}/readyz", timeout=1.0)
            except httpx.HTTPError:
                continue
            if response.status_code == 200:
                del pending[name]
        if stopping():
            return
        time.sleep(0.1)


def _terminate(processes: dict[str, subprocess.Popen[bytes]]) -> None:
    for process in processes.values():
        if process.poll() is None:
            process.terminate()
    deadline = time.monotonic() + 10
    for process in processes.values():
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@cli.command()
def migrate(data_dir: DataDir = None) -> None:
    """Migrate every domain database to the newest revision (starting embedded ones if needed)."""
    databases = _start_databases((data_dir or MeshSettings().data_dir).resolve())
    try:
        for database in databases:
            migrations.upgrade(database.name, database.url)
            typer.echo(f"{database.name}: migrated to {migrations.head_revision(database.name)}")
    finally:
        _stop_databases(databases)


@cli.command("load-sample")
def load_sample(data_dir: DataDir = None, as_of: AsOf = None) -> None:
    """Migrate, then load the sample data into every empty domain database."""
    databases = _start_databases((data_dir or MeshSettings().data_dir).resolve())
    try:
        _prepare(databases, _as_of(as_of))
    finally:
        _stop_databases(databases)


def main() -> None:
    """Entry point of the `datamesh` command."""
    cli()
