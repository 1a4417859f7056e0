"""The proxy process loads only what it runs: nothing of the registry service or its database.

The real `sharewall proxy` process is started under `python -X importtime`, which writes one
line per module the process imports to stderr; the set is read after the proxy is ready.
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SAMPLE_REGISTRY = REPO / "examples" / "registry.yaml"
# Top-level packages the sidecar must never load: the registry service and its database stack.
FORBIDDEN = ("registry", "sqlalchemy", "sqlmodel", "alembic", "asyncpg", "aiosqlite")
# Nor an HTTP client stack it never calls with (tldextract used to bring these for ~6 MB), nor
# aiohttp (~10 MB: the admin server and the control-plane client are the proxy's own).
UNUSED = (
    "requests",
    "urllib3",
    "charset_normalizer",
    "filelock",
    "aiohttp",
    "multidict",
    "yarl",
    "opa_client",
    # structlog would load greenlet (1.2 MB); the proxy runs none. Its refused import still
    # shows in `-X importtime`, its extension module would not.
    "greenlet._greenlet",
    # The shared schema is msgspec: pydantic with the models built (~12 MB, with
    # importlib.metadata for its plugin loader) belongs to the registry service.
    "pydantic",
    "pydantic_core",
    "importlib.metadata",
    # argparse imports shutil for the help's width (sharewall.cli.HelpFormatter finds it as
    # shutil does), and shutil brings bz2 and lzma (~0.35 MB).
    "shutil",
    "bz2",
    "lzma",
    # phonenumbers' package `__init__` (proxy/package_init.py): the inspector checks numbers
    # against the metadata and never formats as you type, matches or reads short numbers.
    # Python's idna codec (nameprep in Python, with stringprep): names are resolved and
    # listeners bound as ASCII, which sharewall.hosts has made them already.
    "encodings.idna",
    "stringprep",
    "phonenumbers.asyoutypeformatter",
    "phonenumbers.phonenumbermatcher",
    "phonenumbers.shortnumberinfo",
    # nor its parsing and formatting util (proxy/inspect/phone.py: the metadata is enough).
    "phonenumbers.phonenumberutil",
)
# Loaded only when a feature needs them: cryptography (its own OpenSSL, ~8 MB) for an
# interception CA or a gateway's client certificates.
ON_DEMAND = ("cryptography", "proxy.certs")
# Imported by the first call that needs them, not at start (~1.5 MB of an idle proxy): the IBAN
# check (python-stdnum reads its country table through importlib.resources, with zipfile) and
# the XML body parser (ElementTree, expat, defusedxml).
FIRST_USE = (
    # Every python-stdnum check (its `stdnum.util` loads pydoc and sysconfig): at the first
    # value shaped like a card number, SSN, IMEI, IMSI, ICCID or IBAN.
    "stdnum",
    "pydoc",
    "sysconfig",
    # UTS 46 / IDNA 2008 for a non-ASCII host name.
    "idna",
    # The brotli decoder, for a body that is brotli-compressed.
    "brotli",
    "_brotli",
    "importlib.resources",
    "zipfile",
    "xml.etree.ElementTree",
    "pyexpat",
    "defusedxml",
    # Naming a connection the kernel redirected: only with `--transparent-listen`; and
    # peeking at what an intercepted CONNECT carries, at the first one.
    "proxy.transparent",
    "proxy.first_bytes",
    "proxy.client_hello",
    "proxy.original_dst",
    # prometheus_client's text format, with `choose_encoder`: at the first scrape that does
    # not ask for OpenMetrics (curl, not Prometheus); with it http.server, wsgiref,
    # urllib.request and email (~3 MB), and the package `__init__` (its default registry).
    "prometheus_client.exposition",
    "prometheus_client.metrics",
    "prometheus_client.process_collector",
    "http.server",
    "wsgiref",
    "urllib.request",
    "email",
    # The OpenMetrics parser: only the supervisor of `--workers N` reads expositions.
    "prometheus_client.parser",
    "prometheus_client.openmetrics.parser",
)


# The registry file is decoded in a child process (`sharewall.document_decode`), whatever its
# size: the proxy never holds PyYAML (~1.2 MB).
IN_A_CHILD = ("yaml", "_yaml")


def imported_modules(importtime_stderr: str) -> set[str]:
    """Module names from `-X importtime` output ("import time: self | cumulative | name")."""
    names = set()
    for line in importtime_stderr.splitlines():
        if not line.startswith("import time:"):
            continue
        name = line.rsplit("|", 1)[-1].strip()
        if name and name != "imported package":
            names.add(name)
    return names


def _wait_ready(proc: subprocess.Popen[bytes], port_file: Path, stderr: Path) -> None:
    deadline = time.monotonic() + 60
    while not port_file.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"proxy did not start:\n{stderr.read_text()[-2000:]}")
        time.sleep(0.05)
    admin = json.loads(port_file.read_text())["admin"]
    url = f"http://127.0.0.1:{admin[1]}/readyz"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    while True:
        try:
            with opener.open(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"proxy never ready:\n{stderr.read_text()[-2000:]}")
        time.sleep(0.05)


def _modules_of_a_ready_proxy(tmp_path: Path, *source: str) -> set[str]:
    """Run `sharewall proxy` with `source` arguments under `-X importtime`; modules once ready."""
    port_file = tmp_path / "ports.json"
    stderr = tmp_path / "stderr.txt"
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    cmd = [
        sys.executable,
        "-X",
        "importtime",
        "-m",
        "sharewall.cli",
        "proxy",
        *source,
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--port-file",
        str(port_file),
        "--spool-dir",
        str(tmp_path / "spool"),
    ]
    with open(stderr, "wb") as err, open(tmp_path / "stdout.txt", "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=REPO, env=env)
        try:
            _wait_ready(proc, port_file, stderr)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
    return imported_modules(stderr.read_text())


@pytest.fixture(scope="module")
def proxy_modules(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """The modules a real `sharewall proxy` on the sample registry has loaded once ready."""
    return _modules_of_a_ready_proxy(
        tmp_path_factory.mktemp("proxy-imports"), "--registry-file", str(SAMPLE_REGISTRY)
    )


class _StandInRegistry(http.server.BaseHTTPRequestHandler):
    """`GET /v1/snapshot` as the registry answers it: the snapshot, then 304s to long polls."""

    snapshot = b""

    def do_GET(self) -> None:  # http.server's name
        if self.headers.get("If-None-Match"):
            time.sleep(0.5)  # a long poll with nothing new (shortened)
            self.send_response(304)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("ETag", '"1"')
        self.send_header("Content-Length", str(len(self.snapshot)))
        self.end_headers()
        self.wfile.write(self.snapshot)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def following_proxy_modules(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """The modules of a proxy following a registry service (`--registry-url`) once ready."""
    from sharewall.registry_file import load_registry_file

    handler = type(
        "Registry",
        (_StandInRegistry,),
        {"snapshot": load_registry_file(SAMPLE_REGISTRY).to_json()},
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        return _modules_of_a_ready_proxy(
            tmp_path_factory.mktemp("following-imports"), "--registry-url", url, "--token", "t"
        )
    finally:
        server.shutdown()
        server.server_close()


def test_the_running_proxy_imports_nothing_of_the_registry_service_or_its_database(
    proxy_modules: set[str],
) -> None:
    # The proxy itself must show up, or the module list was not read at all.
    assert {"proxy.app", "proxy.listener", "sharewall.snapshot"} <= proxy_modules
    loaded = sorted(m for m in proxy_modules if m.split(".")[0] in FORBIDDEN)
    assert loaded == []


def test_the_running_proxy_imports_no_http_client_stack_it_does_not_use(
    proxy_modules: set[str],
) -> None:
    assert "sharewall.recipients" in proxy_modules
    assert sorted(m for m in proxy_modules if m in UNUSED or m.split(".")[0] in UNUSED) == []


def test_the_running_proxy_writes_its_metrics_with_prometheus_client(
    proxy_modules: set[str],
) -> None:
    assert {"proxy.metrics", "prometheus_client.openmetrics.exposition"} <= proxy_modules


def test_a_proxy_without_ca_or_client_ca_loads_no_certificate_library(
    proxy_modules: set[str],
) -> None:
    assert "proxy.listener" in proxy_modules
    loaded = sorted(m for m in proxy_modules if m in ON_DEMAND or m.split(".")[0] in ON_DEMAND)
    assert loaded == []


def test_an_idle_proxy_has_not_loaded_what_only_some_calls_scrapes_or_listeners_need(
    proxy_modules: set[str],
) -> None:
    assert "proxy.inspect.identifiers" in proxy_modules
    assert "proxy.inspect.xml_body" in proxy_modules
    loaded = sorted(m for m in proxy_modules if m in FIRST_USE or m.split(".")[0] in FIRST_USE)
    assert loaded == []


def test_a_proxy_on_a_registry_file_loads_no_yaml_parser(proxy_modules: set[str]) -> None:
    assert "sharewall.document_split" in proxy_modules
    loaded = sorted(m for m in proxy_modules if m.split(".")[0] in IN_A_CHILD)
    assert loaded == []


_SCHEMA_WITHOUT_TYPING_EXTENSIONS = """
import sys
from sharewall.cli import keep_unused_modules_out

keep_unused_modules_out()  # as `sharewall proxy` does first
from sharewall.registry_file import load_registry_file

snapshot = load_registry_file(sys.argv[1])
assert "typing_extensions" not in sys.modules
sys.stdout.buffer.write(snapshot.replace(generated_at=None).to_json())
import aiohttp  # what `--engine opa` loads, after msgspec: typing_extensions is there for it
"""


def test_msgspec_without_typing_extensions_reads_the_registry_the_same() -> None:
    # The proxy imports msgspec with typing_extensions kept out: it takes Python 3.11's typing.
    from sharewall.registry_file import load_registry_file

    out = subprocess.run(
        [sys.executable, "-c", _SCHEMA_WITHOUT_TYPING_EXTENSIONS, str(SAMPLE_REGISTRY)],
        capture_output=True,
        cwd=REPO,
        check=True,
    ).stdout
    assert "typing_extensions" in sys.modules  # this process has it: a real comparison
    assert out == load_registry_file(SAMPLE_REGISTRY).replace(generated_at=None).to_json()


def test_the_root_help_still_lists_every_command() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "sharewall.cli", "--help"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
    ).stdout
    for command in ("check", "proxy", "capture-rules", "ca", "registry", "inject", "injector"):
        assert f"    {command} " in out or f"    {command}\n" in out, command


def test_a_proxy_following_the_registry_service_loads_no_http_library_nor_yaml(
    following_proxy_modules: set[str],
) -> None:
    # Its follower and shipper talk through `proxy.control_client`; the snapshot is JSON.
    assert {"proxy.registry_follower", "proxy.shipper"} <= following_proxy_modules
    unused = (*UNUSED, *FORBIDDEN, "cryptography", "yaml")
    loaded = sorted(m for m in following_proxy_modules if m in unused or m.split(".")[0] in unused)
    assert loaded == []
