"""`datamesh up` end to end: real processes, real ports, a clean stop."""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg
import pytest

from services import DOMAINS, cli
from shared.storage.embedded import free_port

DATAMESH = str(Path(sys.executable).parent / "datamesh")


class DataMeshUp:
    """A `datamesh up` subprocess whose output is read line by line."""

    def __init__(self, data_dir: Path, ports: dict[str, int]):
        # as on a user's machine: no database URLs, no token or pseudonymisation secret but
        # the data directory's
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.endswith("_DATABASE_URL")
            and not k.startswith(("DATAMESH_JWT", "DATAMESH_PSEUDONYM"))
        }
        self.process = subprocess.Popen(
            [
                DATAMESH,
                "up",
                "--data-dir",
                str(data_dir),
                "--as-of",
                "2024-10-18",
                *[arg for name, port in ports.items() for arg in ("--port", f"{name}={port}")],
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout
        for line in self.process.stdout:
            self.lines.put(line)

    def wait_for(self, text: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                assert self.process.poll() is None, "".join(self.output)
                continue
            self.output.append(line)
            if text in line:
                return
        raise AssertionError(f"'{text}' not printed in {timeout}s:\n{''.join(self.output)}")

    def interrupt(self) -> int:
        self.process.send_signal(signal.SIGINT)
        code = self.process.wait(timeout=60)
        self._reader.join(timeout=10)
        assert self.process.stdout
        self.process.stdout.close()
        return code


def _leftovers(data_dir: Path, ports: dict[str, int]) -> list[str]:
    found = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if str(data_dir) in cmdline or any(f"--port {p}" in cmdline for p in ports.values()):
            found.append(f"{process.info['pid']}: {cmdline}")
    return found


def _connected_as(data_dir: Path, name: str) -> set[str]:
    """The database users the domain's service holds connections as (asked as the owner)."""
    cluster = data_dir / "postgres"
    port = (cluster / name / "postmaster.pid").read_text().splitlines()[3]  # PostgreSQL's layout
    password = (cluster / f"{name}.password").read_text().strip()
    with psycopg.connect(
        host="127.0.0.1", port=port, user="datamesh", password=password, dbname="postgres"
    ) as conn:
        rows = conn.execute(
            "SELECT DISTINCT usename FROM pg_stat_activity WHERE application_name = %s",
            (f"datamesh-{name}",),
        ).fetchall()
    return {row[0] for row in rows}


def _database_urls_given(ports: dict[str, int]) -> dict[str, set[str]]:
    """The database URL variables in each service process's environment."""
    given: dict[str, set[str]] = {}
    for process in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        for name, port in ports.items():
            if "shared.serving.server" in cmdline and f"--port {port}" in cmdline:
                given[name] = {k for k in process.environ() if k.endswith("DATABASE_URL")}
    return given


def _free_ports() -> dict[str, int]:
    """A free port for the mesh and for every domain."""
    return {name: free_port() for name in ("mesh", *DOMAINS)}


def test_up_refuses_ports_in_use_before_starting_anything(tmp_path: Path) -> None:
    ports = _free_ports()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", ports["sales"]))
        squatter.listen()
        refused = subprocess.run(
            [DATAMESH, "up", "--data-dir", str(tmp_path / "data")]
            + [arg for name, port in ports.items() for arg in (f"--port-{name}", str(port))],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        f"Ports in use on 127.0.0.1: {ports['sales']} (sales, --port-sales). Another program "
        "(another `datamesh up`?) listens there: stop it, or choose other ports."
    )
    assert not (tmp_path / "data").exists()  # nothing started, nothing written


@pytest.mark.parametrize(
    ("given", "error"),
    [
        ("nope=9001", f"'nope' is not a service; known: {', '.join((*DOMAINS, 'mesh'))}"),
        (f"{DOMAINS[0]}=abc", f"'abc' is not a port (1 to 65535) in '{DOMAINS[0]}=abc'"),
        (f"{DOMAINS[0]}=0", f"'0' is not a port (1 to 65535) in '{DOMAINS[0]}=0'"),
        ("mesh", "'mesh' is not SERVICE=PORT, e.g. mesh=9000"),
        ("mesh=9001", f"port 9001 is given to {DOMAINS[0]} and mesh; each service needs its own"),
    ],
)
def test_up_refuses_a_bad_port_as_a_usage_error_before_starting_anything(
    tmp_path: Path, given: str, error: str
) -> None:
    refused = subprocess.run(
        [DATAMESH, "up", "--data-dir", str(tmp_path / "data"), "--port", given]
        + (["--port", f"{DOMAINS[0]}=9001"] if given == "mesh=9001" else []),
        capture_output=True,
        text=True,
        timeout=60,
        env=os.environ | {"COLUMNS": "1000", "NO_COLOR": "1"},
    )
    assert refused.returncode == 2
    assert f"Invalid value for --port: {error}" in refused.stderr
    assert not (tmp_path / "data").exists()  # nothing started, nothing written


def test_up_refuses_an_unknown_engine_before_starting_anything(tmp_path: Path) -> None:
    refused = subprocess.run(
        [DATAMESH, "up", "--data-dir", str(tmp_path / "data"), "--engine", "trino"],
        capture_output=True,
        text=True,
        timeout=60,
        env=os.environ | {"COLUMNS": "1000", "NO_COLOR": "1"},
    )
    assert refused.returncode == 2
    assert "Invalid value for '--engine'" in refused.stderr and "duckdb" in refused.stderr
    assert not (tmp_path / "data").exists()


def test_up_gives_the_mesh_its_engine_and_lake(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli._mesh_engine_env(cli.MeshEngine.DUCKDB, None) == {"MESH_ENGINE": "duckdb"}
    assert cli._mesh_engine_env(cli.MeshEngine.SPARK, None) == {
        "MESH_ENGINE": "spark",
        "MESH_LAKE_URL": str(tmp_path.resolve() / "lake"),  # where `lake export --to ./lake` writes
    }
    assert cli._mesh_engine_env(cli.MeshEngine.SPARK, "s3://bucket/lake")["MESH_LAKE_URL"] == (
        "s3://bucket/lake"
    )


def test_up_serves_every_domain_and_stops_cleanly(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    ports = _free_ports()
    mesh = DataMeshUp(data_dir, ports)
    try:
        mesh.wait_for("DataMesh is up")
        mesh.wait_for("Press Ctrl-C")
        printed = "".join(mesh.output)
        for name, port in ports.items():
            assert f"http://127.0.0.1:{port}/{name}/docs" in printed
        assert "loaded sample data as of 2024-10-18" in printed
        assert (data_dir / "jwt-secret").stat().st_mode & 0o777 == 0o600
        assert (data_dir / "pseudonym-secret").stat().st_mode & 0o777 == 0o600
        token = re.search(r"export TOKEN=(\S+)", printed)
        assert token is not None
        auth = {"Authorization": f"Bearer {token.group(1)}"}

        clv_url = f"http://127.0.0.1:{ports['sales']}/sales/v1/customer-lifetime-value"
        assert httpx.get(clv_url).status_code == 401
        clv = httpx.get(clv_url, params={"select": "customer_id", "limit": "100"}, headers=auth)
        assert clv.status_code == 200
        assert len(clv.json()) == 15
        leads = httpx.get(f"http://127.0.0.1:{ports['marketing']}/marketing/v1/leads", headers=auth)
        assert len(leads.json()) == 15
        roi = httpx.get(f"http://127.0.0.1:{ports['mesh']}/mesh/v1/campaign-roi", headers=auth)
        assert roi.status_code == 200
        assert len(roi.json()) == 8
        # the domains share the data directory's pseudonymisation secret: email_key joins
        journey = httpx.get(
            f"http://127.0.0.1:{ports['mesh']}/mesh/v1/lead-to-customer-journey", headers=auth
        )
        assert len(journey.json()) == 3
        ready = httpx.get(f"http://127.0.0.1:{ports['mesh']}/mesh/readyz")
        assert ready.json() == {"ready": True, "domains": dict.fromkeys(DOMAINS, "ready")}
        # each service is given its own database's URL only, the mesh none
        assert _database_urls_given(ports) == {
            "mesh": set(),
            **{name: {f"{name.upper()}_DATABASE_URL"} for name in DOMAINS},
        }
        # each service is connected as its domain's role (data only), not as the owner
        for name in DOMAINS:
            assert _connected_as(data_dir, name) == {f"{name}_service"}
            role_password = data_dir / "postgres" / f"{name}.{name}_service.password"
            assert role_password.stat().st_mode & 0o777 == 0o600
    finally:
        code = mesh.interrupt()
    assert code == 0
    assert _leftovers(data_dir, ports) == []

    again = DataMeshUp(data_dir, ports)
    try:
        again.wait_for("Press Ctrl-C")
        assert "kept existing data" in "".join(again.output)
        assert "loaded sample data" not in "".join(again.output)
    finally:
        assert again.interrupt() == 0
    assert _leftovers(data_dir, ports) == []


@pytest.mark.slow
def test_up_restarts_a_domain_database_that_died_and_the_domain_answers_again(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    ports = _free_ports()
    mesh = DataMeshUp(data_dir, ports)
    try:
        mesh.wait_for("Press Ctrl-C")
        token = re.search(r"export TOKEN=(\S+)", "".join(mesh.output))
        assert token is not None
        auth = {"Authorization": f"Bearer {token.group(1)}"}
        orders = f"http://127.0.0.1:{ports['sales']}/sales/v1/orders"
        assert httpx.get(orders, params={"limit": "1"}, headers=auth).status_code == 200
        pid_file = data_dir / "postgres" / "sales" / "postmaster.pid"
        killed = int(pid_file.read_text().split()[0])
        os.kill(killed, signal.SIGKILL)

        mesh.wait_for("sales database stopped; restarting in 1 s", timeout=10)
        mesh.wait_for("sales database restarted", timeout=60)
        assert int(pid_file.read_text().split()[0]) != killed
        # the service, never restarted, reconnects by itself
        deadline = time.monotonic() + 30
        while True:
            read = httpx.get(orders, params={"limit": "1"}, headers=auth, timeout=10)
            if read.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert read.status_code == 200
        assert len(read.json()) == 1
        ready = httpx.get(f"http://127.0.0.1:{ports['sales']}/sales/readyz", timeout=10)
        assert ready.status_code == 200
    finally:
        code = mesh.interrupt()
    assert code == 0
    assert _leftovers(data_dir, ports) == []
