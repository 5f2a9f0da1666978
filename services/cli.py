"""The `datamesh` command: start the whole mesh, migrate, load sample data, check quality."""

from __future__ import annotations

import asyncio
import datetime as dt
import inspect
import json
import os
import signal
import socket
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from importlib import import_module
from pathlib import Path
from types import FrameType
from typing import Annotated
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import asyncpg
import httpx
import typer

from services import DOMAINS, PERSONAS, domain, package, registered, sample, scaffold
from services.federation.settings import PORT as MESH_PORT
from services.generated import generated, stale
from shared.declarations.products import Domain, Product
from shared.governance.quality import Outcome, QualityRun, run_quality
from shared.publishing.lake import ExportBusy, Exported, Lake, export_domain, pseudonym_key
from shared.security.auth import AuthSettings, ensure_secret, known_scopes, mint_token
from shared.security.pseudonym import PseudonymSettings, ensure_pseudonym_secret
from shared.serving.server import default_workers
from shared.settings import ServiceSettings, database_url_for, migration_database_url_for
from shared.storage import migrations, sql_port
from shared.storage.db import (
    connect,
    connection_capacity,
    connections_per_process,
    grant_service_role,
    role_of,
    service_role,
    track_data_versions,
)
from shared.storage.embedded import EmbeddedPostgres
from shared.storage.sample_data import load_if_empty, seed_if_empty

cli = typer.Typer(
    help="DataMesh: domain data products over REST, joined by the mesh.", no_args_is_help=True
)
# connections of a domain database `datamesh up` leaves to the command line and migrations
KEPT_CONNECTIONS = 5


def default_ports() -> dict[str, int]:
    """The port of every service unless `datamesh up` is told otherwise: each domain's declared
    one, in the domains' order, then the mesh's."""
    return {d.name: d.port for d in registered() if d.port is not None} | {"mesh": MESH_PORT}


def _with_port_options(command: Callable[..., None]) -> Callable[..., None]:
    """The command with a `--port-<service>` option (env DATAMESH_PORT_<SERVICE>) for the mesh
    and every registered domain, its default the service's own, in place of `**port_options`."""
    signature = inspect.signature(command, eval_str=True)
    fixed = [p for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD]
    options = [
        inspect.Parameter(
            f"port_{name}",
            inspect.Parameter.KEYWORD_ONLY,
            default=default,
            annotation=Annotated[
                int,
                typer.Option(
                    f"--port-{name}",
                    envvar=f"DATAMESH_PORT_{name.upper()}",
                    min=1,
                    max=65535,
                    help=f"The {name} service's port.",
                ),
            ],
        )
        for name, default in {"mesh": MESH_PORT, **default_ports()}.items()
    ]
    command.__signature__ = signature.replace(parameters=[*fixed, *options])  # type: ignore[attr-defined]
    return command


def _ports(given: dict[str, int], overrides: list[str]) -> dict[str, int]:
    """Each service's port: `given` (--port-<service>), changed by `--port SERVICE=PORT`; a
    usage error (exit 2) for an unknown service, a bad port, or a port given to two services."""
    ports = dict(given)
    for text in overrides:
        name, equals, number = text.partition("=")
        if not equals:
            raise typer.BadParameter(
                f"'{text}' is not SERVICE=PORT, e.g. mesh=9000", param_hint="--port"
            )
        if name not in ports:
            raise typer.BadParameter(
                f"'{name}' is not a service; known: {', '.join(ports)}", param_hint="--port"
            )
        if not number.isdigit() or not 0 < int(number) < 65536:
            raise typer.BadParameter(
                f"'{number}' is not a port (1 to 65535) in '{text}'", param_hint="--port"
            )
        ports[name] = int(number)
    by_port: dict[int, list[str]] = {}
    for name, at in ports.items():
        by_port.setdefault(at, []).append(name)
    for at, names in by_port.items():
        if len(names) > 1:
            raise typer.BadParameter(
                f"port {at} is given to {' and '.join(names)}; each service needs its own",
                param_hint="--port",
            )
    return ports


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
    """Where a domain's database is: the URL its service connects with (a role that reads and
    writes data only), the URL migrations use (the schema owner), and the embedded server
    behind them if we started one."""

    name: str
    url: str
    server: EmbeddedPostgres | None
    migration_url: str

    def migrate(self) -> None:
        """Migrate as the owner, track the data versions of its tables (their triggers, from
        the declarations), publish the SQL port again (its views are dropped while the
        migration runs: they depend on what it may change), then grant the service's role what
        it needs, nothing more."""
        asyncio.run(sql_port.withdraw(self.migration_url))
        migrations.upgrade(self.name, self.migration_url)
        asyncio.run(track_data_versions(self.migration_url, domain(self.name)))
        for warning in asyncio.run(sql_port.publish(self.migration_url, domain(self.name))):
            typer.echo(f"{self.name}: {warning}", err=True)
        role = role_of(self.url)
        if role is None or role == role_of(self.migration_url):
            return  # one URL for both: the service runs as the owner (see docs/security.md)
        if self.server:
            password: str | None = self.server.role_password(role)
        else:  # created with the password of the service's URL if it does not exist yet
            given = urlsplit(self.url).password
            password = unquote(given) if given else None
        asyncio.run(
            grant_service_role(
                self.migration_url,
                role,
                domain=self.name,
                password=password,
                set_password=self.server is not None,
                statement_timeout_ms=ServiceSettings().statement_timeout_ms,
                idle_in_transaction_timeout_ms=ServiceSettings().idle_in_transaction_timeout_ms,
            )
        )


class DatabaseSupervisor:
    """Keeps `datamesh up`'s embedded databases running: a postmaster that exited (crashed,
    killed) is started again after a backoff (1 s, doubling up to 30 s while it keeps dying
    within a minute of its last start), saying so; the services reconnect by themselves."""

    INITIAL_SECONDS = 1.0
    MAX_SECONDS = 30.0
    STABLE_SECONDS = 60.0

    def __init__(self, database: DomainDatabase, echo: Callable[[str], None]):
        assert database.server is not None
        self.database = database
        self.server = database.server
        self.echo = echo
        self.delay = self.INITIAL_SECONDS
        self.restart_at: float | None = None  # when the next start is due, while it is down
        self.started_at = time.monotonic()

    def poll(self) -> None:
        """Look once: notice a stopped server, or start it if its restart is due."""
        name = self.database.name
        now = time.monotonic()
        if self.restart_at is None:
            if self.server.running():
                return
            if now - self.started_at > self.STABLE_SECONDS:
                self.delay = self.INITIAL_SECONDS  # it had been running well: a fresh backoff
            self.echo(f"{name} database stopped; restarting in {self.delay:g} s")
            self.restart_at = now + self.delay
            return
        if now < self.restart_at:
            return
        try:
            self.server.start()
        except RuntimeError as failure:
            self.delay = min(self.delay * 2, self.MAX_SECONDS)
            self.restart_at = time.monotonic() + self.delay
            reason = str(failure).splitlines()[0]
            self.echo(f"{name} database did not start ({reason}); retrying in {self.delay:g} s")
            return
        self.restart_at = None
        self.started_at = time.monotonic()
        self.delay = min(self.delay * 2, self.MAX_SECONDS)
        self.echo(f"{name} database restarted")


def _as_of(value: str | None) -> dt.date:
    if value is None:
        return dt.date.today()
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(
            f"'{value}' is not a date like 2024-10-18", param_hint="--as-of"
        ) from None


def start_databases(
    data_dir: Path, names: tuple[str, ...] = DOMAINS, *, attach: bool = False
) -> list[DomainDatabase]:
    """Each domain's database: the configured server, else an embedded one started under
    `data_dir` (for the CLI, the benchmarks and tests). With `attach`, an embedded server that
    another process runs already (`datamesh up`) is used as it is, and left running."""
    started: list[DomainDatabase] = []
    try:
        for name in names:
            url = database_url_for(name)
            if url:
                migration_url = migration_database_url_for(name) or url
                started.append(DomainDatabase(name, url, None, migration_url))
                continue
            server = EmbeddedPostgres(data_dir / "postgres", name)
            if attach and server.attach():
                database = domain(name).database
                started.append(
                    DomainDatabase(
                        name, server.url(database, service_role(name)), None, server.url(database)
                    )
                )
                continue
            server.start((domain(name).database,))
            database = domain(name).database
            started.append(
                DomainDatabase(
                    name, server.url(database, service_role(name)), server, server.url(database)
                )
            )
    except BaseException:
        stop_databases(started)
        raise
    return started


def stop_databases(databases: list[DomainDatabase]) -> None:
    """Stop the embedded servers among them."""
    for database in databases:
        if database.server:
            database.server.stop()


def prepare_databases(databases: list[DomainDatabase], as_of: dt.date) -> None:
    """Migrate each database and load the sample data as of `as_of` where it is empty."""
    for database in databases:
        database.migrate()
        rows = sample(database.name)(as_of)
        loaded = asyncio.run(load_if_empty(domain(database.name), database.migration_url, rows))
        state = f"loaded sample data as of {as_of}" if loaded else "kept existing data"
        typer.echo(f"  {database.name:<10} migrated; {state}")


class MeshEngine(StrEnum):
    """What computes the mesh's metrics (docs/mesh.md, "Engines")."""

    DUCKDB = "duckdb"
    SPARK = "spark"


def _mesh_engine_env(engine: MeshEngine, lake: str | None) -> dict[str, str]:
    """The mesh's engine settings: MESH_ENGINE, and on Spark MESH_LAKE_URL (a local path made
    absolute; default ./lake, where `datamesh lake export --to ./lake` writes)."""
    if engine is MeshEngine.DUCKDB:
        return {"MESH_ENGINE": engine.value}
    url = lake or "./lake"
    if "://" not in url:
        url = str(Path(url).expanduser().resolve())
    return {"MESH_ENGINE": engine.value, "MESH_LAKE_URL": url}


@cli.command()
@_with_port_options
def up(
    data_dir: DataDir = None,
    as_of: AsOf = None,
    host: Annotated[str, typer.Option(help="Interface the services listen on.")] = "127.0.0.1",
    port: Annotated[
        list[str] | None,
        typer.Option(
            metavar="SERVICE=PORT",
            help="A service's port, e.g. mesh=9000 or a domain's name=9001; repeat for more "
            "(wins over --port-SERVICE).",
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Worker processes per service, sharing its port (default: half the cores, 1 "
            f"to 4: {default_workers()} here; docs/operations.md).",
            show_default=False,
        ),
    ] = None,
    engine: Annotated[
        MeshEngine,
        typer.Option(
            envvar="MESH_ENGINE",
            help="What computes the mesh's metrics: duckdb (in process, reading the domains "
            "over HTTP) or spark (Apache Spark over the lake's snapshots; docs/mesh.md).",
        ),
    ] = MeshEngine.DUCKDB,
    lake: Annotated[
        str | None,
        typer.Option(
            envvar="MESH_LAKE_URL",
            help="The lake the spark engine reads: a path or s3://bucket/prefix (default ./lake).",
        ),
    ] = None,
    **port_options: int,  # --port-<service> for every service: see _with_port_options
) -> None:
    """Start every domain's database, migrate, load sample data if empty, serve everything."""
    ports = _ports({name: port_options[f"port_{name}"] for name in default_ports()}, port or [])
    settings = ServiceSettings()
    workers = workers or default_workers()
    root = (data_dir or settings.data_dir).resolve()
    stopping = False

    def _stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    started = time.monotonic()
    _refuse_ports_in_use(host, ports)
    typer.echo(f"DataMesh: data in {root}")
    databases = start_databases(root)
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        prepare_databases(databases, _as_of(as_of))
        _refuse_too_many_connections(databases, workers, settings)
        base = {name: f"http://{host}:{ports[name]}" for name in ports}
        # no service is given a database URL but its own (the mesh none), nor an owner's
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.endswith(("_DATABASE_URL", "_MIGRATION_DATABASE_URL"))
        }
        database_urls = {d.name: {f"{d.name.upper()}_DATABASE_URL": d.url} for d in databases}
        env["MESH_DOMAINS"] = "{" + ", ".join(f'"{n}": "{base[n]}"' for n in DOMAINS) + "}"
        mesh_env = _mesh_engine_env(engine, lake)
        auth = AuthSettings(data_dir=root)
        if not (auth.jwt_secret or auth.jwt_secret_file or auth.jwks_url or auth.jwks_file):
            env["DATAMESH_JWT_SECRET_FILE"] = str(ensure_secret(root))
        if not PseudonymSettings(data_dir=root).configured():  # email_key's, mesh-wide
            env["DATAMESH_PSEUDONYM_SECRET_FILE"] = str(ensure_pseudonym_secret(root))
        admin_token = _local_token(AuthSettings(data_dir=root), PERSONAS["admin"], "admin", "8h")
        apps = {name: f"{package(name)}.app:app" for name in DOMAINS} | {
            "mesh": "services.federation.app:app"
        }
        for name, target in apps.items():
            processes[name] = subprocess.Popen(
                # uvicorn as shared.serving.server configures it: no uvicorn access line (it has the
                # query string), the graceful shutdown period, forwarded headers trusted from
                # DATAMESH_FORWARDED_ALLOW_IPS only, the header timeout and connection cap
                [
                    sys.executable,
                    "-m",
                    "shared.serving.server",
                    target,
                    "--host",
                    host,
                    "--port",
                    str(ports[name]),
                    "--workers",
                    str(workers),
                ],
                env=env | database_urls.get(name, {}) | (mesh_env if name == "mesh" else {}),
                start_new_session=True,
            )
        _wait_ready(base, processes, lambda: stopping)
        typer.echo(f"\nDataMesh is up in {time.monotonic() - started:.1f}s:")
        for name in ("mesh", *DOMAINS):
            typer.echo(f"  {name:<10} {base[name]}/{name}/    docs: {base[name]}/{name}/docs")
        if engine is MeshEngine.SPARK:
            typer.echo(
                f"The mesh computes on Spark over the lake {mesh_env['MESH_LAKE_URL']} "
                "(the latest snapshot of each product: `datamesh lake export` writes them)."
            )
        if admin_token:
            typer.echo("\nAn admin token (8 hours; `datamesh token --help` mints others):")
            typer.echo(f"  export TOKEN={admin_token}")
            first = registered()[0]
            typer.echo(
                f'  curl -H "Authorization: Bearer $TOKEN" '
                f"'{base[first.name]}/{first.name}/v1/{first.products[0].name}?limit=5'"
            )
        typer.echo("Press Ctrl-C to stop.")
        supervisors = [
            DatabaseSupervisor(d, lambda line: typer.echo(line, err=True))
            for d in databases
            if d.server
        ]
        while not stopping:
            for supervisor in supervisors:
                supervisor.poll()
            for name, process in processes.items():
                if process.poll() is not None:
                    typer.echo(
                        f"the {name} service exited with code {process.returncode}", err=True
                    )
                    stopping = True
            time.sleep(0.2)
    finally:
        typer.echo("Stopping DataMesh...")
        terminate_services(processes, grace=settings.shutdown_grace_seconds)
        stop_databases(databases)
        typer.echo("Stopped.")


def _refuse_too_many_connections(
    databases: list[DomainDatabase], workers: int, settings: ServiceSettings
) -> None:
    """Exit (code 1) if the workers of a domain's service could open more connections than its
    database accepts (each worker its pool and a few more: connections_per_process), less a
    few kept for the command line and migrations: rather than 503s under load."""
    needed = workers * connections_per_process(settings)

    async def capacity(url: str) -> int:
        conn = await connect(url)
        try:
            return await connection_capacity(conn)
        finally:
            await conn.close()

    for database in databases:
        accepted = asyncio.run(capacity(database.migration_url)) - KEPT_CONNECTIONS
        if needed > accepted:
            typer.echo(
                f"The {database.name} service's {workers} workers could open {needed} connections "
                f"to its database ({connections_per_process(settings)} each: "
                f"DATAMESH_POOL_SIZE={settings.pool_size} and 3 more), more than the {accepted} "
                f"it accepts (max_connections less those reserved, less {KEPT_CONNECTIONS} kept "
                "for the command line): fewer --workers, or a smaller DATAMESH_POOL_SIZE.",
                err=True,
            )
            raise typer.Exit(1)


def _refuse_ports_in_use(host: str, ports: dict[str, int]) -> None:
    """Exit (code 1) naming the ports something already listens on: the services could not
    bind them, and readiness checks would be answered by whatever is there."""
    taken = []
    for name, port in ports.items():
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            try:
                probe.bind((host, port))
            except OSError:
                taken.append(f"{port} ({name}, --port-{name})")
    if taken:
        typer.echo(
            f"Ports in use on {host}: {', '.join(taken)}. Another program (another `datamesh "
            "up`?) listens there: stop it, or choose other ports.",
            err=True,
        )
        raise typer.Exit(1)


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


def terminate_services(processes: dict[str, subprocess.Popen[bytes]], *, grace: float) -> None:
    """SIGTERM every service (each finishes its in-flight requests within `grace` seconds, then
    closes its pool); one still running a few seconds after that is killed. The databases are
    stopped after the services, so every acknowledged write is committed before."""
    for process in processes.values():
        if process.poll() is None:
            process.terminate()
    deadline = time.monotonic() + grace + 5
    for process in processes.values():
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _ttl(text: str) -> dt.timedelta:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if len(text) < 2 or text[-1] not in units or not text[:-1].isdigit() or int(text[:-1]) == 0:
        raise typer.BadParameter(
            f"'{text}' is not a duration like 30m, 8h or 7d", param_hint="--ttl"
        )
    return dt.timedelta(seconds=int(text[:-1]) * units[text[-1]])


def _local_token(auth: AuthSettings, scopes: tuple[str, ...], subject: str, ttl: str) -> str | None:
    secret = auth.secret()
    if secret is None:
        return None
    return mint_token(
        secret,
        scopes,
        ttl=_ttl(ttl),
        subject=subject,
        issuer=auth.jwt_issuer,
        audience=auth.jwt_audience,
    )


@cli.command()
def token(
    scope: Annotated[
        list[str] | None, typer.Option(help="A scope to grant; repeat for more.")
    ] = None,
    persona: Annotated[str | None, typer.Option(help=f"One of: {', '.join(PERSONAS)}.")] = None,
    ttl: Annotated[str, typer.Option(help="Lifetime: 30m, 8h, 7d.")] = "8h",
    sub: Annotated[str | None, typer.Option(help="The token's subject (who it is for).")] = None,
    data_dir: DataDir = None,
) -> None:
    """Mint a token with the local secret and print only the token."""
    scopes = list(scope or [])
    if persona is not None:
        if persona not in PERSONAS:
            raise typer.BadParameter(
                f"'{persona}' is not one of {', '.join(PERSONAS)}", param_hint="--persona"
            )
        scopes += PERSONAS[persona]
    unknown = [s for s in scopes if s not in known_scopes(DOMAINS)]
    if unknown:
        raise typer.BadParameter(
            f"unknown scope(s) {', '.join(unknown)}; known: {', '.join(known_scopes(DOMAINS))}",
            param_hint="--scope",
        )
    if not scopes:
        raise typer.BadParameter("give at least one --scope or a --persona", param_hint="--scope")
    auth = AuthSettings(data_dir=(data_dir or ServiceSettings().data_dir).resolve())
    minted = _local_token(
        auth, tuple(dict.fromkeys(scopes)), sub or persona or "datamesh-user", ttl
    )
    if minted is None:
        typer.echo(
            "No local secret: run `datamesh up` once (it creates one in the data directory) or set "
            "DATAMESH_JWT_SECRET_FILE.",
            err=True,
        )
        raise typer.Exit(1)
    typer.echo(minted)


OnlyDomain = Annotated[
    str | None,
    typer.Option("--domain", help=f"One domain only: {', '.join(DOMAINS)} (default: all)."),
]


def _only(name: str | None) -> tuple[str, ...]:
    """The domains a command works on: the one named by --domain (a usage error if it is not
    registered), else all; a Kubernetes migration Job names its own, the only database whose
    URLs it has."""
    if name is None:
        return DOMAINS
    if name not in DOMAINS:
        raise typer.BadParameter(
            f"'{name}' is not a domain; known: {', '.join(DOMAINS)}", param_hint="--domain"
        )
    return (name,)


@cli.command()
def migrate(only: OnlyDomain = None, data_dir: DataDir = None) -> None:
    """Migrate every domain database (or the --domain one) to every head: its own revisions and
    the framework's (starting embedded ones if needed), then grant the service's role; no
    sample data (the production path: docs/deploy.md)."""
    names = _only(only)
    databases = start_databases((data_dir or ServiceSettings().data_dir).resolve(), names)
    try:
        for database in databases:
            database.migrate()
            heads = ", ".join(migrations.head_revisions(database.name))
            typer.echo(f"{database.name}: migrated to {heads}")
    finally:
        stop_databases(databases)


@cli.command("load-sample")
def load_sample(only: OnlyDomain = None, data_dir: DataDir = None, as_of: AsOf = None) -> None:
    """Migrate, then load the sample data into every empty domain database (or the --domain
    one)."""
    names = _only(only)
    databases = start_databases((data_dir or ServiceSettings().data_dir).resolve(), names)
    try:
        prepare_databases(databases, _as_of(as_of))
    finally:
        stop_databases(databases)


def _seed(database: DomainDatabase, scale: int, as_of: dt.date) -> bool:
    """Load the domain's data at the scale into its empty database; False if not empty."""
    checked = domain(database.name)
    if scale == 1:
        rows = sample(database.name)(as_of)
        return asyncio.run(load_if_empty(checked, database.migration_url, rows))
    generator = import_module(f"{package(database.name)}.scale").generate

    async def generate(conn: asyncpg.Connection) -> None:
        await generator(conn, scale, as_of)

    return asyncio.run(seed_if_empty(checked, database.migration_url, generate))


@cli.command()
def seed(
    scale: Annotated[
        int, typer.Option(min=1, help="N times the sample's shape (1 = the sample itself).")
    ] = 1,
    data_dir: DataDir = None,
    as_of: AsOf = None,
) -> None:
    """Migrate, then load a deterministic data set of the given scale into EMPTY databases
    (see docs/scale.md); exit 1 if a domain database already holds data."""
    day = _as_of(as_of)
    databases = start_databases((data_dir or ServiceSettings().data_dir).resolve())
    try:
        for database in databases:
            database.migrate()
        for database in databases:
            started = time.monotonic()
            if not _seed(database, scale, day):
                typer.echo(
                    f"{database.name}: the database already holds data; seed loads only into "
                    "empty databases (use a fresh --data-dir)",
                    err=True,
                )
                raise typer.Exit(1)
            typer.echo(
                f"  {database.name:<10} seeded at scale {scale} as of {day} "
                f"in {time.monotonic() - started:.1f}s"
            )
    finally:
        stop_databases(databases)


async def _run_quality(checked: Domain, url: str) -> QualityRun:
    conn = await connect(url)
    try:
        return await run_quality(conn, checked, trigger="cli")
    finally:
        await conn.close()


def _aligned(rows: list[tuple[str, ...]]) -> list[str]:
    """The rows as lines of left-aligned columns, two spaces apart."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def _print_run(name: str, run: QualityRun) -> None:
    tally = run.tally
    typer.echo(
        f"\n{name}: score {tally.score} ({tally.checks} checks: {tally.passed} passed, "
        f"{tally.failed} failed, {tally.warned} warned, {tally.errored} errors; run {run.run_id})"
    )
    rows = [
        (
            r.product,
            r.check_name,
            str(r.severity),
            str(r.outcome).upper(),
            "" if r.measured_value is None else format(r.measured_value, "f"),
            r.threshold,
        )
        for r in run.results
    ]
    header = ("product", "check", "severity", "outcome", "measured", "threshold")
    for line in _aligned([header, *rows]):
        typer.echo(f"  {line}")


def junit_report(runs: dict[str, QualityRun]) -> ET.ElementTree:
    """JUnit XML of quality runs: a testsuite per domain, a testcase per check. A failed check
    is a <failure>, a check that could not run an <error>; a warning passes, its finding in
    <system-out>."""
    suites = ET.Element("testsuites", name="datamesh quality")
    totals = {"tests": 0, "failures": 0, "errors": 0}
    for name, run in runs.items():
        tally = run.tally
        counts = {"tests": tally.checks, "failures": tally.failed, "errors": tally.errored}
        suite = ET.SubElement(
            suites,
            "testsuite",
            {
                "name": name,
                **{k: str(v) for k, v in counts.items()},
                "skipped": "0",
                "timestamp": run.started_at.isoformat(),
                "time": f"{(run.finished_at - run.started_at).total_seconds():.3f}",
            },
        )
        properties = ET.SubElement(suite, "properties")
        for key, value in (("run_id", run.run_id), ("score", tally.score)):
            ET.SubElement(properties, "property", name=key, value=str(value))
        for result in run.results:
            case = ET.SubElement(
                suite, "testcase", classname=f"{name}.{result.product}", name=result.check_name
            )
            detail = f"{result.message}\nsample rows: {result.sample_rows}"
            if result.outcome is Outcome.FAIL:
                failure = ET.SubElement(case, "failure", message=result.message, type=result.kind)
                failure.text = detail
            elif result.outcome is Outcome.ERROR:
                error = ET.SubElement(case, "error", message=result.message, type=result.kind)
                error.text = result.message
            elif result.outcome is Outcome.WARN:
                ET.SubElement(case, "system-out").text = f"WARNING: {detail}"
        for key in totals:
            totals[key] += counts[key]
    suites.attrib.update({k: str(v) for k, v in totals.items()})
    tree = ET.ElementTree(suites)
    ET.indent(tree)
    return tree


@cli.command()
def quality(
    only: Annotated[
        str | None,
        typer.Option("--domain", help=f"Check one domain: {', '.join(DOMAINS)} (default: all)."),
    ] = None,
    junit: Annotated[
        Path | None, typer.Option(help="Also write the results as JUnit XML to this file.")
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Migrate, run every quality check and print the results; exit 1 if a check failed or
    could not run (warnings pass)."""
    names = _only(only)
    databases = start_databases((data_dir or ServiceSettings().data_dir).resolve(), names)
    runs: dict[str, QualityRun] = {}
    try:
        for database in databases:
            database.migrate()
            runs[database.name] = asyncio.run(_run_quality(domain(database.name), database.url))
    finally:
        stop_databases(databases)
    for name, run in runs.items():
        _print_run(name, run)
    if junit:
        junit.parent.mkdir(parents=True, exist_ok=True)
        junit_report(runs).write(junit, encoding="utf-8", xml_declaration=True)
        typer.echo(f"\nJUnit XML written to {junit}")
    if any(run.tally.failed or run.tally.errored for run in runs.values()):
        raise typer.Exit(1)


def _sql_port_urls(name: str, data_dir: Path) -> tuple[str, str]:
    """The owner's URL of a domain's database and the URL readers reach it at (whose user and
    password `reader_url` replaces): the configured server (its owner
    `<DOMAIN>_MIGRATION_DATABASE_URL`), else the embedded one `datamesh up` runs under the data
    directory, at the port it listens on now."""
    url = database_url_for(name)
    if url:
        return migration_database_url_for(name) or url, url
    server = EmbeddedPostgres(data_dir / "postgres", name)
    port = server.running_port()
    if port is None:
        typer.echo(
            f"Error: the {name} database under {data_dir} is not running: start `datamesh up` "
            "first (its embedded servers listen on a port chosen at each start), or set "
            f"{name.upper()}_DATABASE_URL",
            err=True,
        )
        raise typer.Exit(1)
    server.port = port
    url = server.url(domain(name).database)
    return url, url


def reader_url(base: str, login: str, password: str) -> str:
    """A postgresql:// URL of the database of `base` (its host, port, database and options)
    as the login."""
    parts = urlsplit(base)
    where = parts.netloc.rpartition("@")[2]
    netloc = f"{quote(login, safe='')}:{quote(password, safe='')}@{where}"
    return urlunsplit(("postgresql", netloc, parts.path, parts.query, ""))


@cli.command("sql-access")
def sql_access(
    name: Annotated[str, typer.Option("--domain", help=f"The domain: {', '.join(DOMAINS)}.")],
    pii: Annotated[
        bool,
        typer.Option("--pii", help="Read PII columns in clear (the <domain>_pii_reader group)."),
    ] = False,
    login: Annotated[
        str | None,
        typer.Option(
            "--name", help="The login (default <domain>_analyst; with --pii <domain>_pii_analyst)."
        ),
    ] = None,
    revoke: Annotated[
        bool, typer.Option("--revoke", help="Drop the login and end its sessions instead.")
    ] = False,
    data_dir: DataDir = None,
) -> None:
    """Create a read-only login of a domain's SQL port (docs/sql.md), or rotate its password,
    and print its connection URL; each run gives a new random password (the old one stops
    working)."""
    if name not in DOMAINS:
        raise typer.BadParameter(
            f"'{name}' is not a domain; known: {', '.join(DOMAINS)}", param_hint="--domain"
        )
    login = login or sql_port.default_login(name, pii=pii)
    owner, base = _sql_port_urls(name, (data_dir or ServiceSettings().data_dir).resolve())
    limits = sql_port.LoginLimits.configured()
    try:
        if revoke:
            dropped = asyncio.run(sql_port.revoke_login(owner, name, login))
            typer.echo(f"dropped the login {login}" if dropped else f"no login {login} to drop")
            return
        password = asyncio.run(sql_port.grant_login(owner, name, login, pii=pii, limits=limits))
    except sql_port.LoginRefused as refused:
        typer.echo(f"Error: {refused}", err=True)
        raise typer.Exit(1) from None
    except (OSError, asyncpg.PostgresError) as failed:
        typer.echo(f"Error: the {name} database: {type(failed).__name__}: {failed}", err=True)
        raise typer.Exit(1) from None
    typer.echo(reader_url(base, login, password))
    typer.echo(
        f"{login} reads the {name} SQL port (schema {sql_port.SCHEMA}), PII "
        f"{'in clear' if pii else 'masked'}; statements over "
        f"{limits.statement_timeout_ms / 1000:g} s are cancelled, {limits.connection_limit} "
        "connections at most. Its password is new: the previous one no longer works.",
        err=True,
    )


@cli.command()
def generate(
    out: Annotated[
        Path | None,
        typer.Option(
            help="The folder to write them to (default: the project's root, found from the "
            "current folder upwards; alembic.ini reads migrations/ next to it)."
        ),
    ] = None,
) -> None:
    """Write the deployment files that list every domain (docker-compose.yml, .env.example,
    alembic.ini, deploy/prometheus/prometheus.yml, a Trino catalog per domain in
    deploy/trino/catalog/, each domain's Kubernetes manifests under deploy/k8s/) from the
    registered domains' declarations. They are build outputs, not committed: run it before
    `docker compose up`, `alembic` or `kubectl kustomize`, and after registering a domain."""
    if out is None:
        try:
            out = scaffold.find_root(Path.cwd())
        except scaffold.Refused as refused:
            typer.echo(f"Error: {refused}, or give --out", err=True)
            raise typer.Exit(2) from None
    out.mkdir(parents=True, exist_ok=True)
    files = generated(registered(), {name: package(name) for name in DOMAINS})
    changed = stale(out, files)
    for path, content in files.items():
        if path in changed:
            (out / path).parent.mkdir(parents=True, exist_ok=True)
            (out / path).write_text(content)
        typer.echo(f"{'wrote' if path in changed else 'up to date:'} {out / path}")


lake_cli = typer.Typer(
    help="The lake output port: Parquet snapshots of the products (docs/lake.md).",
    no_args_is_help=True,
)
cli.add_typer(lake_cli, name="lake")


def _exported_products(only: str | None, product: str | None) -> dict[str, tuple[Product, ...]]:
    """The products an export writes, by domain: every product of every domain, or of one,
    or one product (of the domain given, or of the one domain that has it)."""
    if only is not None and only not in DOMAINS:
        raise typer.BadParameter(
            f"'{only}' is not a domain; known: {', '.join(DOMAINS)}", param_hint="--domain"
        )
    names = DOMAINS if only is None else (only,)
    if product is None:
        return {name: domain(name).products for name in names}
    found: dict[str, tuple[Product, ...]] = {
        name: (declared,) for name in names if (declared := domain(name).product(product))
    }
    if not found:
        raise typer.BadParameter(
            f"no domain{'' if only is None else f' {only}'} publishes a product '{product}'",
            param_hint="--product",
        )
    if len(found) > 1:
        raise typer.BadParameter(
            f"'{product}' is a product of {' and '.join(found)}: say which with --domain",
            param_hint="--product",
        )
    return found


@lake_cli.command("export")
def lake_export(
    to: Annotated[
        str | None,
        typer.Option(
            "--to",
            help="The lake: a local folder or s3://bucket/prefix (default DATAMESH_LAKE_URL).",
        ),
    ] = None,
    only: Annotated[
        str | None,
        typer.Option("--domain", help=f"Export one domain: {', '.join(DOMAINS)} (default: all)."),
    ] = None,
    product: Annotated[
        str | None, typer.Option("--product", help="Export one product (default: all).")
    ] = None,
    keep: Annotated[
        int | None,
        typer.Option(
            min=1, help="Complete snapshots kept per product (default DATAMESH_LAKE_KEEP, 5)."
        ),
    ] = None,
    data_dir: DataDir = None,
    as_of: AsOf = None,
) -> None:
    """Export the products as Parquet snapshots to a lake, each domain from one consistent
    database snapshot, PII masked as the mesh reads it; then point each product's `_latest` at
    its new snapshot and remove the oldest beyond --keep. Reaches each domain's database as
    the other commands do (<DOMAIN>_DATABASE_URL, else the embedded one: the one `datamesh up`
    runs, or started, migrated and loaded with the sample if empty, as `up` would)."""
    settings = ServiceSettings()
    url = to or settings.lake_url
    if not url:
        raise typer.BadParameter("give the lake (or set DATAMESH_LAKE_URL)", param_hint="--to")
    try:
        lake = Lake.at(url, s3_endpoint=settings.lake_s3_endpoint)
    except (ValueError, OSError) as refused:
        raise typer.BadParameter(str(refused), param_hint="--to") from None
    chosen = _exported_products(only, product)
    root = (data_dir or settings.data_dir).resolve()
    databases = start_databases(root, tuple(chosen), attach=True)
    try:
        embedded = [d for d in databases if d.server]
        if embedded:  # started here: migrated and loaded as `datamesh up` would
            prepare_databases(embedded, _as_of(as_of))
        pseudonyms = PseudonymSettings(data_dir=root)
        if not pseudonyms.configured() and any(database_url_for(n) is None for n in chosen):
            ensure_pseudonym_secret(root)  # the embedded mesh's, which `datamesh up` hands out
        typer.echo(f"Exporting to {lake.url}")
        failed = False
        for database in databases:
            declared = domain(database.name)
            try:
                done = asyncio.run(
                    export_domain(
                        declared,
                        database.url,
                        lake,
                        products=chosen[database.name],
                        pseudonym=pseudonym_key(declared, pseudonyms),
                        keep=keep or settings.lake_keep,
                        pause_seconds=settings.lake_pause_seconds,
                    )
                )
            except (ExportBusy, RuntimeError, OSError) as exc:
                typer.echo(f"  {database.name}: not exported: {exc}", err=True)
                failed = True
                continue
            _print_export(database.name, done)
    finally:
        stop_databases(databases)
    if failed:
        raise typer.Exit(1)


def _print_export(name: str, done: list[Exported]) -> None:
    if not done:
        return
    typer.echo(f"  {name}: snapshot {done[0].snapshot_id} (one database snapshot)")
    rows: list[tuple[str, ...]] = [
        (
            e.product.name,
            f"{e.manifest['row_count']:,} rows",
            f"{len(e.manifest['partitions'])} files",
            f"{e.manifest['bytes']:,} bytes",
            f"removed {len(e.removed)} old" if e.removed else "",
            e.location,
        )
        for e in done
    ]
    for line in _aligned(rows):
        typer.echo(f"    {line}")


def docs_url(declared: Domain) -> str:
    """A domain's docs page (Swagger UI) at its default port on this machine."""
    return f"http://127.0.0.1:{declared.port}/{declared.name}/docs"


@cli.command("domains")
def list_domains(
    as_json: Annotated[
        bool, typer.Option("--json", help="A JSON array of the domains, one object each.")
    ] = False,
) -> None:
    """List the registered domains, in the order of their ports: name, owner, data
    classification, default port, docs URL at that port, and products."""
    if as_json:
        listed = [
            {
                "name": d.name,
                "owner": d.owner,
                "classification": d.data_classification,
                "port": d.port,
                "docs": docs_url(d),
                "products": [p.name for p in d.products],
            }
            for d in registered()
        ]
        typer.echo(json.dumps(listed, indent=2))
        return
    header = ("domain", "owner", "classification", "port", "docs", "products")
    rows = [
        (
            d.name,
            d.owner,
            d.data_classification,
            str(d.port),
            docs_url(d),
            ", ".join(p.name for p in d.products),
        )
        for d in registered()
    ]
    for line in _aligned([header, *rows]):
        typer.echo(line)


domain_cli = typer.Typer(help="Create a domain.", no_args_is_help=True)
cli.add_typer(domain_cli, name="domain")


@domain_cli.command("new")
def new_domain(
    name: Annotated[
        str, typer.Argument(help="Its name: lowercase letters, digits and underscores.")
    ],
    owner: Annotated[
        str | None,
        typer.Option(help="The owning team's email address (default: NAME-team@company.com)."),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(
            min=1, max=65535, help="Its port (default: the next after the highest one in use)."
        ),
    ] = None,
    classification: Annotated[
        str, typer.Option(help=f"Its data classification: {', '.join(scaffold.CLASSIFICATIONS)}.")
    ] = "internal",
    install: Annotated[
        bool,
        typer.Option(
            help="Install the registration into this environment (only where it is an editable "
            "install of this checkout)."
        ),
    ] = True,
) -> None:
    """Write a new domain (services/NAME/ with its README.md page, migrations/NAME/, its line
    in pyproject.toml) with an example table and view, then install the registration."""
    try:
        root = scaffold.find_root(Path.cwd())
    except scaffold.Refused as refused:
        typer.echo(f"Error: {refused}", err=True)
        raise typer.Exit(2) from None
    if classification not in scaffold.CLASSIFICATIONS:
        raise typer.BadParameter(
            f"'{classification}' is not one of {', '.join(scaffold.CLASSIFICATIONS)}",
            param_hint="--classification",
        )
    known = default_ports()
    new = scaffold.NewDomain(
        name=name,
        owner=owner or f"{name}-team@company.com",
        port=port or scaffold.next_port(known),
        classification=classification,
    )
    wrong = scaffold.refusal(root, new.name, new.owner, new.port, known)
    if wrong:
        raise typer.BadParameter(wrong[1], param_hint=wrong[0])
    try:
        written = scaffold.write(root, new)
    except scaffold.Refused as refused:
        typer.echo(f"Error: {refused}", err=True)
        raise typer.Exit(1) from None
    for path in written:
        typer.echo(f"wrote {path}" if path.name != "pyproject.toml" else f"registered in {path}")
    if not install or scaffold.editable_root() != root:
        typer.echo(
            f"\nNot installed: install the project again (`pip install --editable {root}`; "
            "`make up` does it)."
        )
    else:
        _install(root)
    typer.echo("")
    typer.echo(scaffold.next_steps(new))


def _install(root: Path) -> None:
    """Reinstall the project: entry points are read from the installed metadata."""
    typer.echo(f"installing {root} (pip install --no-deps --editable) ...")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--editable", str(root)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        typer.echo(
            f"{done.stdout}{done.stderr}\nThe files are written but the install failed: install "
            "the project again by hand (`make up` does it).",
            err=True,
        )
        raise typer.Exit(1)


def main() -> None:
    """Entry point of the `datamesh` command."""
    cli()


if __name__ == "__main__":  # `python -m services.cli`
    main()
