"""`datamesh token`: mints a token with the data directory's secret and prints only the token."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest

from shared.security.auth import AuthSettings, TokenVerifier, ensure_secret

DATAMESH = str(Path(sys.executable).parent / "datamesh")
NO_SECRET = (
    "No local secret: run `datamesh up` once (it creates one in the data directory) or set "
    "DATAMESH_JWT_SECRET_FILE.\n"
)


@dataclass(frozen=True)
class Run:
    code: int
    stdout: str
    stderr: str

    @property
    def message(self) -> str:
        """stderr without the frame and line wrapping of Typer's error box."""
        return " ".join(self.stderr.replace("│", " ").replace("╭", " ").replace("╰", " ").split())


@dataclass(frozen=True)
class Minted:
    data_dir: Path
    runs: dict[str, Run]

    def claims(self, case: str) -> dict[str, Any]:
        """The printed token's claims, verified with the data directory's secret."""
        run = self.runs[case]
        assert (run.code, run.stderr) == (0, ""), run
        assert run.stdout.count("\n") == 1 and run.stdout.endswith("\n")  # one line: the token
        secret = (self.data_dir / "jwt-secret").read_text().strip()
        claims: dict[str, Any] = jwt.decode(
            run.stdout.strip(),
            secret,
            algorithms=["HS256"],
            audience="datamesh",
            issuer="datamesh",
        )
        return claims


# each case is a Python start-up of the CLI (~1 s of CPU): few, each proving several things
CASES = {
    "scopes": [
        *("--scope", "sales:read", "--scope", "mesh:read", "--scope", "sales:read"),
        *("--ttl", "30m", "--sub", "alice"),
    ],
    "sales_analyst": ["--persona", "sales_analyst"],
    "marketing_analyst and a scope": [
        *("--persona", "marketing_analyst", "--scope", "marketing:pii", "--ttl", "45s"),
    ],
    "admin": ["--persona", "admin", "--ttl", "7d"],
    "unknown scope": ["--scope", "sales:read", "--scope", "sales:delete"],
    "unknown persona": ["--persona", "superuser"],
}


def _environment() -> dict[str, str]:
    """As on a user's machine: no configured token key, so the data directory's secret is used."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DATAMESH_JWT", "DATAMESH_JWKS", "DATAMESH_ENV", "DATAMESH_DATA_DIR"))
    }


def _run_all(invocations: dict[str, list[str]], cwd: Path) -> dict[str, Run]:
    """Every invocation of `datamesh token` at once (each is a Python start-up)."""
    started = {
        case: subprocess.Popen(
            [DATAMESH, "token", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**_environment(), "COLUMNS": "100"},
            cwd=cwd,
        )
        for case, args in invocations.items()
    }
    runs = {}
    for case, process in started.items():
        stdout, stderr = process.communicate(timeout=60)
        runs[case] = Run(process.returncode, stdout, stderr)
    return runs


@pytest.fixture(scope="module")
def minted(tmp_path_factory: pytest.TempPathFactory) -> Minted:
    root = tmp_path_factory.mktemp("token-cli")
    data_dir = root / "data"
    ensure_secret(data_dir)
    invocations = {case: [*args, "--data-dir", str(data_dir)] for case, args in CASES.items()}
    invocations["no secret"] = ["--persona", "admin"]  # ./.datamesh of the cwd: there is none
    return Minted(data_dir, _run_all(invocations, cwd=root))


@pytest.mark.parametrize(
    ("case", "scope", "sub", "ttl"),
    [
        ("scopes", "sales:read mesh:read", "alice", 30 * 60),
        ("sales_analyst", "sales:read mesh:read", "sales_analyst", 8 * 3600),
        (
            "marketing_analyst and a scope",
            "marketing:pii marketing:read mesh:read",
            "marketing_analyst",
            45,
        ),
        ("admin", "admin", "admin", 7 * 86400),
    ],
)
def test_the_printed_token_carries_exactly_what_was_asked(
    minted: Minted, case: str, scope: str, sub: str, ttl: int
) -> None:
    claims = minted.claims(case)
    assert claims["scope"] == scope
    assert claims["sub"] == sub
    assert claims["exp"] - claims["iat"] == ttl
    assert claims["nbf"] == claims["iat"]
    assert set(claims) == {"sub", "scope", "iat", "nbf", "exp", "iss", "aud"}


def test_a_service_on_the_same_data_directory_accepts_the_token(minted: Minted) -> None:
    verifier = TokenVerifier(AuthSettings(jwt_secret=None, data_dir=minted.data_dir))
    principal = verifier.verify(minted.runs["scopes"].stdout.strip())
    assert (principal.subject, principal.scopes) == (
        "alice",
        frozenset({"sales:read", "mesh:read"}),
    )


@pytest.mark.parametrize(
    ("case", "named"),
    [
        ("unknown scope", "Invalid value for --scope: unknown scope(s) sales:delete; known: "),
        ("unknown persona", "Invalid value for --persona: 'superuser' is not one of admin, "),
    ],
)
def test_a_wrong_request_exits_non_zero_naming_what_is_wrong(
    minted: Minted, case: str, named: str
) -> None:
    run = minted.runs[case]
    assert run.code == 2
    assert run.stdout == ""
    assert named in run.message


def test_the_known_scopes_are_listed_when_one_is_unknown(minted: Minted) -> None:
    assert (
        "sales:delete; known: sales:read, sales:pii, sales:write, sales:admin, marketing:read, "
        "marketing:pii, marketing:write, marketing:admin, mesh:read, admin"
    ) in minted.runs["unknown scope"].message
    assert (
        "admin, sales_analyst, marketing_analyst, analyst" in minted.runs["unknown persona"].message
    )


def test_without_a_secret_it_exits_1_saying_how_to_get_one(minted: Minted) -> None:
    assert minted.runs["no secret"] == Run(1, "", NO_SECRET)


def test_the_secret_file_is_private(minted: Minted) -> None:
    path = minted.data_dir / "jwt-secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(path.read_text().strip()) == 64  # 48 random bytes, base64url


def test_ensure_secret_keeps_a_secret_and_repairs_a_bad_file(tmp_path: Path) -> None:
    path = ensure_secret(tmp_path / "new" / "dir")
    secret = path.read_text()
    assert ensure_secret(tmp_path / "new" / "dir") == path
    assert path.read_text() == secret  # never replaced: tokens minted with it stay valid

    path.chmod(0o644)  # e.g. restored from a backup
    ensure_secret(path.parent)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == secret

    path.write_text("")  # a first run interrupted between creating and writing
    ensure_secret(path.parent)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(path.read_text()) == 64
