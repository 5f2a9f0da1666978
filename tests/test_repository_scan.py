"""No secret is written into the repository: every file git tracks, and every file
`datamesh generate` writes (not committed), is scanned for the seed's demo passwords, private
keys, tokens, cloud keys and passwords in configuration files."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from services import DOMAINS, package, registered
from services.cli import cli
from services.generated import generated

ROOT = Path(__file__).resolve().parent.parent

# the seed's demo passwords, assembled here so that this file does not hold them either
SEED_PASSWORDS = ("SuperSecure" + "Pass123!", "datamesh" + "2024")

SECRETS: dict[str, re.Pattern[str]] = {
    "seed demo password": re.compile("|".join(re.escape(p) for p in SEED_PASSWORDS), re.I),
    "private key": re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----"),
    "JWT": re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"),
    "AWS access key id": re.compile(r"\b(AKIA|ASIA|AGPA|AIDA|AROA|ANPA)[A-Z0-9]{16}\b"),
    "AWS secret access key": re.compile(
        r"aws_?secret_?(access_?)?key\W{0,3}\s*[:=]\s*['\"]?[A-Za-z0-9/+=]{40}\b", re.I
    ),
}
# in configuration files, a key naming a password or secret must have no literal value:
# empty, or a reference to the environment (`${VAR}`, `${VAR:?message}`, `$VAR`)
CONFIG_ASSIGNMENT = re.compile(
    r"""(?<![\w.${-])(?P<key>[\w.-]*(password|passwd|secret|api_?key|access_?token)[\w.-]*)["']?\s*[:=]\s*"""
    r"""(?P<value>["']?\$\{[^}]*\}["']?|[^\s#,}]*)""",
    re.I,
)
# ... or Trino's reference to its environment, `${ENV:VAR}`
ENV_REFERENCE = re.compile(
    r"""["']?(\$\{[A-Za-z_][A-Za-z0-9_]*(:?[-?][^}]*)?\}|\$\{ENV:[A-Za-z_]\w*\}|\$[A-Za-z_]\w*)?["']?"""
)
# keys whose value names a Kubernetes Secret object (manifests, Helm values), never holds one
SECRET_REFERENCES = {"secretName", "existingSecret"}
CONFIG_SUFFIXES = {".yml", ".yaml", ".toml", ".ini", ".cfg", ".conf", ".json", ".properties"}
CONFIG_NAMES = {"Dockerfile", "Makefile", ".env", "docker-compose.yml"}


def is_config(path: Path) -> bool:
    return (
        path.suffix in CONFIG_SUFFIXES
        or path.name in CONFIG_NAMES
        or path.name.startswith(".env")
        or path.name.endswith(".env")
    )


def findings(path: Path, text: str) -> list[str]:
    """`file:line: what` for each secret in the text of the file at path."""
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        kinds = [kind for kind, pattern in SECRETS.items() if pattern.search(line)]
        if is_config(path):
            for match in CONFIG_ASSIGNMENT.finditer(line):
                if match["key"] in SECRET_REFERENCES:
                    continue
                if not ENV_REFERENCE.fullmatch(match["value"]):
                    kinds.append(f"literal value for {match['key']}")
        found += [f"{path}:{number}: {kind}" for kind in kinds]
    return found


def tracked_files() -> list[Path]:
    """Every file git tracks, and every new one it would (not ignored), before its commit."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.decode()
    return [Path(name) for name in listed.split("\0") if name]


def test_no_tracked_file_holds_a_secret() -> None:
    files = tracked_files()
    assert {Path("pyproject.toml"), Path("tests/test_repository_scan.py")} <= set(files)
    found = []
    for path in files:
        full = ROOT / path
        if not full.is_file():
            continue  # deleted in the work tree
        data = full.read_bytes()
        if b"\0" in data[:8192]:
            continue  # binary
        found += findings(path, data.decode("utf-8", "replace"))
    assert found == []


def test_no_generated_deployment_file_holds_a_secret(tmp_path: Path) -> None:
    """docker-compose.yml, .env.example, alembic.ini and the Kubernetes manifests are not
    committed (`datamesh generate` writes them): scanned as generated, as configuration files, so
    that no default password reaches them."""
    done = CliRunner().invoke(cli, ["generate", "--out", str(tmp_path)])
    assert done.exit_code == 0, done.output
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert written == sorted(generated(registered(), {d: package(d) for d in DOMAINS}))
    found = []
    for name in written:
        assert is_config(Path(name)), name
        found += findings(Path(name), (tmp_path / name).read_text())
    assert found == []
    compose = (tmp_path / "docker-compose.yml").read_text()
    assert compose.count("PASSWORD:") >= 2  # the passwords are there, each a reference


@pytest.mark.parametrize(
    ("name", "line", "kind"),
    [
        ("README.md", f"log in with {SEED_PASSWORDS[0]}", "seed demo password"),
        ("docs/x.md", f"PGPASSWORD={SEED_PASSWORDS[1].upper()}", "seed demo password"),
        ("key.pem", "-----BEGIN " + "RSA PRIVATE KEY-----", "private key"),
        ("id", "-----BEGIN " + "OPENSSH PRIVATE KEY-----", "private key"),
        ("a.py", "T = '" + "eyJhbGciOiJIUzI1NiJ9" + ".eyJzdWIiOiJ4In0.c2lnbmF0dXJlX2hlcmU'", "JWT"),
        ("a.py", "key = '" + "AKIA" + "ABCDEFGHIJKLMNOP'", "AWS access key id"),
        (
            "b.py",
            "aws_secret_access_key = " + "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "AWS secret access key",
        ),
        ("docker-compose.yml", "      POSTGRES_" + "PASSWORD: hunter2", "literal value for"),
        (".env.example", "SALES_DB_" + "PASSWORD=hunter2", "literal value for"),
        ("settings.json", '{"db_' + 'password": "hunter2"}', "literal value for"),
        ("alembic.ini", "jwt_" + "secret = abc", "literal value for"),
        ("sales.properties", "connection-" + "password=hunter2", "literal value for"),
        ("values.yaml", "      client_" + "secret: abc", "literal value for"),
    ],
)
def test_the_scan_finds_each_kind_of_secret(name: str, line: str, kind: str) -> None:
    found = findings(Path(name), f"first line\n{line}\n")
    assert len(found) == 1
    assert found[0].startswith(f"{name}:2: {kind}")


@pytest.mark.parametrize(
    ("name", "line"),
    [
        (
            "docker-compose.yml",
            "      POSTGRES_" + "PASSWORD: ${SALES_DB_PASSWORD:?set it in .env}",
        ),
        ("docker-compose.yml", "      DATAMESH_JWT_" + "SECRET: ${DATAMESH_JWT_SECRET}"),
        ("docker-compose.yml", "  URL: postgresql://app:${APP_" + "PASSWORD:?set it}@db:5432/app"),
        ("sales.properties", "connection-" + "password=${ENV:SALES_SQL_PASSWORD}"),
        (".env.example", "SALES_DB_" + "PASSWORD="),
        (".env.example", "DATAMESH_JWT_" + "SECRET="),
        ("Dockerfile", "ENV DB_" + "PASSWORD=$DB_PASSWORD"),
        ("README.md", "set DATAMESH_JWT_" + "SECRET=... in .env"),  # prose, not configuration
        ("shared/security/auth.py", "jwt_secret: SecretStr | None = None"),
        # the name of a Kubernetes Secret, in a manifest or Helm values
        ("api.yaml", "          secret" + "Name: database"),
        ("values.yaml", "  existing" + "Secret: jupyterhub-oidc"),
    ],
)
def test_the_scan_lets_references_and_empty_values_pass(name: str, line: str) -> None:
    assert findings(Path(name), line) == []


def test_the_threat_model_covers_the_ten_risks_with_real_tests() -> None:
    """Every risk of the OWASP API Top 10 (2023) has a row in docs/security.md, and every test
    the page names exists."""
    page = (ROOT / "docs" / "security.md").read_text()
    rows = re.findall(r"^\| \*\*API(\d+) ", page, re.M)
    assert rows == [str(n) for n in range(1, 11)]
    named = set(re.findall(r"`tests/(\w+\.py)::(\w+)`", page))
    assert len(named) > 30
    missing = [
        f"{module}::{name}"
        for module, name in sorted(named)
        if not re.search(rf"^(async )?def {name}\(", (ROOT / "tests" / module).read_text(), re.M)
    ]
    assert missing == []
