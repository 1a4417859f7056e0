"""Build step: compile the native fast path of inspection (`proxy/inspect/_native.c`) with gcc.

Optional by design: when there is no compiler, no Python headers, or the build fails, a warning
is printed and the package installs without it (inspection then runs in pure Python, with the
same findings). `SHAREWALL_NATIVE_BUILD=0` skips it. Only the standard library is used here, so
it runs in pip's isolated build environment with hatchling alone.

`python hatch_build.py` compiles it in place (after editing the C source in a checkout).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent
SOURCE = ROOT / "proxy" / "inspect" / "_native.c"


def native_target() -> Path:
    """Where the compiled module goes: beside its source, named for this interpreter."""
    return SOURCE.with_name("_native" + (sysconfig.get_config_var("EXT_SUFFIX") or ".so"))


def compile_native() -> Path:
    """Compile `_native.c` in place; raises on any failure (the caller decides what it means)."""
    target = native_target()
    include = sysconfig.get_paths()["include"]
    compiler = shlex.split(sysconfig.get_config_var("CC") or "cc")
    with tempfile.TemporaryDirectory() as tmp:
        built = Path(tmp) / target.name
        command = [
            *compiler,
            "-O2",
            "-fPIC",
            "-shared",
            "-Wall",
            f"-I{include}",
            str(SOURCE),
            "-o",
            str(built),
        ]
        subprocess.run(command, check=True, capture_output=True, timeout=300)  # noqa: S603 - fixed arguments
        # Rename into place: a process importing it meanwhile never sees half a file, and two
        # builds at once (a test building the wheel beside an install) never share a file.
        with tempfile.NamedTemporaryFile(
            dir=target.parent, prefix="_native.", suffix=".tmp", delete=False
        ) as out:
            out.write(built.read_bytes())
        # Readable by all, as the compiler wrote it: the image runs as another user (and a
        # temporary file is 0600).
        os.chmod(out.name, 0o755)  # noqa: S103
        os.replace(out.name, target)
    return target


def _wanted() -> bool:
    return os.environ.get("SHAREWALL_NATIVE_BUILD", "1") not in ("0", "false", "no")


try:
    from hatchling.builders.hooks.plugin.interface import BuildHookInterface
except ImportError:  # run as a script, outside a build
    BuildHookInterface = object  # type: ignore[assignment,misc]


class NativeBuildHook(BuildHookInterface):  # type: ignore[misc,valid-type]
    """Compiles the extension for a wheel or an editable install; never fails the build."""

    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict) -> None:
        if self.target_name != "wheel" or not _wanted():
            return
        try:
            target = compile_native()
        except Exception as error:  # whatever went wrong, the package installs without it
            detail = getattr(error, "stderr", b"") or b""
            self.app.display_warning(
                f"sharewall: native inspection not built ({type(error).__name__}); "
                f"pure Python is used. {detail.decode(errors='replace')[:500]}"
            )
            return
        if version == "editable":
            return  # the module sits in the source tree, which the editable install points at
        build_data["force_include"][str(target)] = str(target.relative_to(ROOT))
        build_data["pure_python"] = False
        build_data["infer_tag"] = True


if __name__ == "__main__":
    print(compile_native())
    sys.exit(0)
