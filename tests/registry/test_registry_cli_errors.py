"""Every `sharewall registry …` mistake is one line on stderr and exit 2, never a traceback."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from .conftest import postgres_reachable

MISSING_PG_DB = "postgresql://postgres@127.0.0.1:5432/sharewall_no_such_database"


def run(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sharewall.cli", "registry", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def held_port():
    """A loopback port another socket is listening on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'cli.sqlite'}"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


CASES = [
    pytest.param(
        ["tokens", "create", "--role", "wizard", "--name", "x"], "invalid choice", id="bad role"
    ),
    pytest.param([], "required", id="no subcommand"),
    pytest.param(["serve", "--listen", "127.0.0.1:notaport"], "HOST:PORT", id="bad listen"),
    pytest.param(["serve", "--db", "mysql://u@h/db"], "unsupported database 'mysql'", id="scheme"),
    pytest.param(["serve", "--db", "::not a url::"], "not a database URL", id="not a url"),
    pytest.param(
        ["migrate", "--db", "{sqlite}", "--revision", "nope"],
        "unknown migration revision",
        id="revision",
    ),
    pytest.param(
        ["tokens", "list", "--db", "postgresql://postgres@127.0.0.1:{closed}/x"],
        "cannot use the database",
        id="database unreachable",
    ),
    pytest.param(
        ["serve", "--db", "{sqlite}", "--listen", "127.0.0.1:{held}"],
        "cannot listen on",
        id="port in use",
    ),
    pytest.param(
        ["serve", "--db", "{sqlite}", "--listen", "no-such-host.invalid:0"],
        "cannot listen on",
        id="unknown host",
    ),
    pytest.param(
        ["apply", "{tmp}/missing.yaml", "--db", "{sqlite}"], "missing.yaml", id="file missing"
    ),
    pytest.param(
        ["apply", "{tmp}/empty.yaml", "--url", "http://127.0.0.1:{closed}", "--token", "t"],
        "cannot reach the registry",
        id="registry unreachable",
    ),
    pytest.param(
        ["tokens", "revoke", "999999", "--db", "{sqlite}"], "no token 999999", id="unknown token"
    ),
    pytest.param(["tokens", "revoke", "abc"], "invalid int", id="token id not a number"),
    pytest.param(
        ["tokens", "list", "--db", MISSING_PG_DB],
        "does not exist",
        id="database missing",
        marks=pytest.mark.skipif(not postgres_reachable(), reason="PostgreSQL not reachable"),
    ),
]


@pytest.mark.parametrize(("argv", "expected"), CASES)
def test_a_mistake_is_one_line_and_exit_2(argv, expected, tmp_path, sqlite_url, held_port):
    (tmp_path / "empty.yaml").write_text("recipients: []\n")
    values = {"sqlite": sqlite_url, "held": held_port, "closed": _closed_port(), "tmp": tmp_path}
    result = run(*(a.format(**values) for a in argv))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert expected in lines[0]
    assert "Traceback" not in result.stderr + result.stdout


def test_postgresql_and_sqlite_urls_without_a_driver_are_accepted(db_url):
    plain = db_url.replace("+asyncpg", "").replace("+aiosqlite", "")
    result = run("tokens", "create", "--role", "engineer", "--name", "plain-url", "--db", plain)
    assert result.returncode == 0, result.stderr
    result = run("tokens", "list", "--db", plain)
    assert result.returncode == 0, result.stderr
    assert "plain-url" in result.stdout
