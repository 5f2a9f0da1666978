"""`datamesh domain new NAME`: a new domain is its folder (with its page, README.md), its
migration tree and one registration line, and nothing else in the project changes (git says
so); the scaffold refuses bad input before writing anything, writes code that passes the
linters and a page that passes the docs check as generated, and `datamesh up` serves the domain
right after."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner, Result

from services import DOMAINS, domain, scaffold
from services.cli import cli, default_ports
from services.generated import GENERATORS
from shared.storage.embedded import free_port
from tests.checkout import commit_all, copy_project, git

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
GENERATED = [
    "services/finance/__init__.py",
    "services/finance/products.py",
    "services/finance/sample.py",
    "services/finance/scale.py",
    "services/finance/writes.py",
    "services/finance/app.py",
    "services/finance/README.md",
    "migrations/finance/__init__.py",
    "migrations/finance/env.py",
    "migrations/finance/script.py.mako",
    "migrations/finance/versions/0001_finance_schema.py",
]


def snapshot(tree: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(tree)): p.read_bytes()
        for p in tree.rglob("*")
        if p.is_file() and ".git" not in p.relative_to(tree).parts
    }


# what `git status --porcelain` lists after `datamesh domain new finance`, sorted: the one
# changed file, pyproject.toml (whose diff is one added line), and the domain's two new folders
STATUS = [" M pyproject.toml", "?? migrations/finance/", "?? services/finance/"]


def changes(tree: Path) -> tuple[list[str], str]:
    """What git says changed in the tree: `git status --porcelain`, sorted, and the lines added
    and removed in tracked files (`git diff --numstat`)."""
    status = sorted(git(tree, "status", "--porcelain").splitlines())
    return status, git(tree, "diff", "--numstat")


def new_domain(cwd: Path, *args: str) -> Result:
    """`datamesh domain new ARGS` run in cwd (in this process, never installing)."""
    here = Path.cwd()
    os.chdir(cwd)
    try:
        return CliRunner().invoke(
            cli, ["domain", "new", *args, "--no-install"], env={"COLUMNS": "1000", "NO_COLOR": "1"}
        )
    finally:
        os.chdir(here)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the project that the refusals must leave as it is."""
    return copy_project(tmp_path_factory.mktemp("project"))


FIRST = DOMAINS[0]
FIRST_PORT = domain(FIRST).port


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["Finance"], "Invalid value for NAME: 'Finance' is not a domain name: lowercase"),
        (["fin-ance"], "Invalid value for NAME: 'fin-ance' is not a domain name: lowercase"),
        (["2fa"], "Invalid value for NAME: '2fa' is not a domain name"),
        (
            ["class"],
            "Invalid value for NAME: 'class' is a Python keyword: it cannot name a package",
        ),
        (["mesh"], "Invalid value for NAME: 'mesh' is reserved: the federation service's"),
        (["framework"], "Invalid value for NAME: 'framework' is reserved: the framework's"),
        (["scaffold"], "Invalid value for NAME: 'scaffold' is reserved: this generator's package"),
        (["shared"], "Invalid value for NAME: 'shared' is reserved: a folder of the project"),
        (["federation"], "Invalid value for NAME: 'federation' is reserved: the mesh's package"),
        ([FIRST], f"Invalid value for NAME: '{FIRST}' is already a domain"),
        (["finance", "--port", "8000"], "Invalid value for --port: port 8000 is mesh's"),
        (
            ["finance", "--port", str(FIRST_PORT)],
            f"Invalid value for --port: port {FIRST_PORT} is {FIRST}'s; each service needs its own",
        ),
        (["finance", "--port", "0"], "Invalid value for '--port'"),
        (
            ["finance", "--owner", "finance-team"],
            "Invalid value for --owner: 'finance-team' is not an email address",
        ),
        (
            ["finance", "--owner", 'a"b@company.com'],
            """Invalid value for --owner: 'a"b@company.com' is not an email address""",
        ),
        (
            ["finance", "--classification", "secret"],
            "Invalid value for --classification: 'secret' is not one of public, internal, "
            "confidential",
        ),
    ],
)
def test_a_bad_domain_is_refused_as_a_usage_error_and_nothing_is_written(
    project: Path, args: list[str], error: str
) -> None:
    before = snapshot(project)
    refused = new_domain(project, *args)
    assert refused.exit_code == 2, refused.output
    assert error in refused.stderr
    assert refused.stdout == ""
    assert snapshot(project) == before


@pytest.mark.parametrize("folder", ["services", "migrations"])
def test_a_domain_whose_folder_exists_is_refused(project: Path, folder: str) -> None:
    (project / folder / "finance").mkdir()
    try:
        before = snapshot(project)
        refused = new_domain(project, "finance")
        assert refused.exit_code == 2
        assert f"Invalid value for NAME: {folder}/finance already exists" in refused.stderr
        assert snapshot(project) == before
    finally:
        (project / folder / "finance").rmdir()


def test_outside_a_project_nothing_is_written(tmp_path: Path) -> None:
    refused = new_domain(tmp_path, "finance")
    assert refused.exit_code == 2
    assert f"Error: no datamesh project in {tmp_path.resolve()} or above" in refused.stderr
    assert list(tmp_path.iterdir()) == []


def test_the_registration_is_one_line_after_the_last_entry_point() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    changed = scaffold.registration(text, "finance")
    last = f'{DOMAINS[-1]} = "services.{DOMAINS[-1]}"\n'
    assert changed == text.replace(last, last + 'finance = "services.finance"\n', 1)
    assert scaffold.registered_in(changed)["finance"] == "services.finance"


def test_the_default_port_is_the_next_free_one_after_the_highest() -> None:
    assert scaffold.next_port(default_ports()) == max(default_ports().values()) + 1
    assert scaffold.next_port({"a": 8001, "mesh": 8000, "b": 8003, "c": 8004}) == 8005


@pytest.fixture(scope="module")
def scaffolded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A copy of the project, a git repository of its own, with `finance` scaffolded into it
    (not installed), and the command's output."""
    copy = commit_all(copy_project(tmp_path_factory.mktemp("scaffolded")))
    done = new_domain(copy, "finance", "--owner", "ledger@company.com")
    assert done.exit_code == 0, done.output
    return copy, done.stdout


def test_new_writes_the_package_the_tree_and_one_registration_line(
    scaffolded: tuple[Path, str],
) -> None:
    copy, printed = scaffolded
    assert [line.removeprefix("wrote ") for line in printed.splitlines()[: len(GENERATED)]] == (
        GENERATED
    )
    changed = {
        name
        for name, content in snapshot(copy).items()
        if not (ROOT / name).is_file() or (ROOT / name).read_bytes() != content
    }
    assert changed == {*GENERATED, "pyproject.toml"}
    assert (copy / "pyproject.toml").read_text() == (ROOT / "pyproject.toml").read_text().replace(
        f'{DOMAINS[-1]} = "services.{DOMAINS[-1]}"\n',
        f'{DOMAINS[-1]} = "services.{DOMAINS[-1]}"\nfinance = "services.finance"\n',
    )
    products = (copy / "services/finance/products.py").read_text()
    next_port = max(default_ports().values()) + 1
    assert f"    port={next_port},\n" in products
    assert '    owner="ledger@company.com",\n' in products
    assert '    data_classification="internal",\n' in products
    assert "{{" not in "".join((copy / name).read_text() for name in GENERATED)
    assert "\nNext:\n  make up " in printed
    assert f"http://127.0.0.1:{next_port}/finance/docs\n" in printed
    assert "  .venv/bin/datamesh generate " in printed
    # nothing to paste elsewhere: no README rows, no docs/ section
    assert "| `finance_analyst`" not in printed and "docs/" not in printed


def test_git_sees_the_new_folders_and_one_registration_line(
    scaffolded: tuple[Path, str],
) -> None:
    copy, _ = scaffolded
    assert changes(copy) == (STATUS, "1\t0\tpyproject.toml\n")
    assert git(copy, "diff", "--unified=0", "pyproject.toml").splitlines()[-1] == (
        '+finance = "services.finance"'
    )
    assert not any((copy / name).exists() for name in GENERATORS)


@pytest.mark.slow
def test_the_generated_code_passes_ruff_and_mypy(scaffolded: tuple[Path, str]) -> None:
    copy, _ = scaffolded
    generated = ["services/finance", "migrations/finance"]
    for command in (["ruff", "check"], ["ruff", "format", "--check"], ["mypy"]):
        done = subprocess.run(
            [str(BIN / command[0]), *command[1:], *generated],
            cwd=copy,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, f"{' '.join(command)}:\n{done.stdout}{done.stderr}"


def _wait_for(process: subprocess.Popen[str], text: str, timeout: float) -> str:
    """What the process printed up to the line holding text."""
    assert process.stdout is not None
    printed = ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line and process.poll() is not None:
            break
        printed += line
        if text in line:
            return printed
    raise AssertionError(f"'{text}' not printed in {timeout}s:\n{printed}")


@pytest.mark.slow
def test_a_new_domain_is_served_by_datamesh_up_right_after(tmp_path: Path) -> None:
    """Scaffold finance into a copy installed into a fresh environment (which reuses this
    one's packages), then `datamesh up` serves it, with the other domains and the mesh."""
    source = commit_all(copy_project(tmp_path / "source"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python, datamesh = venv / "bin" / "python", venv / "bin" / "datamesh"
    [site] = (venv / "lib").glob("python3*/site-packages")
    (site / "parent-environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--editable", str(source)],
        check=True,
        timeout=300,
        capture_output=True,
    )
    scaffolded = subprocess.run(
        [str(datamesh), "domain", "new", "finance"],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert scaffolded.returncode == 0, scaffolded.stdout + scaffolded.stderr
    assert f"installing {source}" in scaffolded.stdout
    # installed, and still only the domain's folders and its line changed
    assert changes(source) == (STATUS, "1\t0\tpyproject.toml\n")
    assert not any((source / name).exists() for name in GENERATORS)

    data = tmp_path / "data"
    ports = {name: free_port() for name in ("mesh", *DOMAINS, "finance")}
    # as on a user's machine: no database URLs, no secrets but the data directory's
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.endswith("_DATABASE_URL")
        and not k.startswith(("DATAMESH_JWT", "DATAMESH_PSEUDONYM"))
    }
    up = subprocess.Popen(
        [str(datamesh), "up", "--data-dir", str(data)]
        + [arg for name, port in ports.items() for arg in ("--port", f"{name}={port}")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=tmp_path,
        start_new_session=True,
    )
    try:
        printed = _wait_for(up, "Press Ctrl-C", timeout=90)
        admin_token = re.search(r"export TOKEN=(\S+)", printed)
        assert admin_token is not None, printed
        admin = {"Authorization": f"Bearer {admin_token.group(1)}"}
        minted = subprocess.run(
            [str(datamesh), "token", "--persona", "analyst", "--data-dir", str(data)],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert minted.returncode == 0, minted.stderr
        analyst = {"Authorization": f"Bearer {minted.stdout.strip()}"}
        finance = f"http://127.0.0.1:{ports['finance']}/finance"

        entries = httpx.get(f"{finance}/v1/entries", headers=analyst)
        assert entries.status_code == 200, entries.text
        assert len(entries.json()) == 26
        totals = httpx.get(f"{finance}/v1/monthly-totals", headers=analyst)
        assert sum(row["entry_count"] for row in totals.json()) == 26
        assert httpx.get(f"{finance}/docs").status_code == 200
        metadata = httpx.get(f"{finance}/v1/metadata", headers=analyst).json()
        assert metadata["owner"] == "finance-team@company.com"
        contract = httpx.get(
            f"{finance}/v1/products/entries/contract",
            headers=analyst | {"Accept": "application/json"},
        )
        assert contract.status_code == 200, contract.text
        run = httpx.post(f"{finance}/v1/quality/runs", headers=admin, timeout=30)
        assert run.status_code == 201, run.text
        outcomes = {(r["product"], r["check"]): r["outcome"] for r in run.json()["results"]}
        assert set(outcomes.values()) == {"pass"}, outcomes

        writer = subprocess.run(
            [
                str(datamesh),
                "token",
                "--scope",
                "finance:read",
                "--scope",
                "finance:write",
                "--data-dir",
                str(data),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        ).stdout.strip()
        body = {"entry_date": "2024-10-01", "category": "Standard", "amount": 12.5}
        created = httpx.post(
            f"{finance}/v1/entries", json=body, headers={"Authorization": f"Bearer {writer}"}
        )
        assert created.status_code == 201, created.text
        assert created.json()["entry_id"] == 27

        catalog = httpx.get(
            f"http://127.0.0.1:{ports['mesh']}/mesh/v1/catalog", headers=analyst, timeout=30
        )
        assert catalog.status_code == 200, catalog.text
        [listed] = [d for d in catalog.json()["domains"] if d["name"] == "finance"]
        assert listed["status"] == "available"
        assert {p["name"] for p in listed["products"]} == {"entries", "monthly-totals"}
    finally:
        os.killpg(up.pid, signal.SIGINT)
        try:
            up.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait()
        assert up.stdout is not None
        up.stdout.close()


def test_the_new_domains_page_passes_the_docs_check(scaffolded: tuple[Path, str]) -> None:
    """services/finance/README.md says what tests/test_docs.py and tests/test_quality.py ask of
    a registered domain's page, read from the copy's own declaration."""
    copy, _ = scaffolded
    checked = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json, pathlib\n"
            "from services.finance.products import DOMAIN\n"
            "from tests.domain_docs import page_problems\n"
            "page = pathlib.Path('services/finance/README.md').read_text()\n"
            "print(json.dumps(page_problems(DOMAIN, page)))\n",
        ],
        cwd=copy,  # the copy's folder first on the path: its services, its tests
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stderr
    assert json.loads(checked.stdout) == []
    page = (copy / "services/finance/README.md").read_text()
    assert "| owner | ledger@company.com |" in page
    assert f"| port | {max(default_ports().values()) + 1} |" in page
