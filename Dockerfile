# syntax=docker/dockerfile:1
# One image for every sharewall process: `proxy` (the sidecar), `registry serve`, `injector serve`
# and `capture-rules` (the transparent-capture init container). Build and push: README.md.
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
# gcc for the optional native inspection module (proxy/inspect/_native.c, compiled by
# hatch_build.py at install); only this stage has it, the final stage gets the built package.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install --yes --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/sharewall
ENV PATH=/opt/sharewall/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY policies.rego/ policies.rego/
COPY sharewall/ sharewall/
COPY proxy/ proxy/
COPY registry/ registry/
COPY injector/ injector/
# The Makefile's install (pip install of the project; tests/test_dockerfile.py runs it), without
# -e and test extras. Every dependency ships wheels; the compiler above is for our own native
# module only. pip itself is removed: the final stage installs nothing.
RUN python -m pip install . \
    && python -m pip uninstall --yes pip

FROM python:${PYTHON_VERSION}-slim-bookworm
# iptables (nft and legacy back ends) for `sharewall capture-rules --apply`. Not pinned: Debian
# replaces a version in place with its security update, so a pin breaks the build.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install --yes --no-install-recommends iptables \
    && rm -rf /var/lib/apt/lists/*
# 1337: the UID the capture rules let out unredirected (the proxy's own upstream connections).
RUN groupadd --system --gid 1337 sharewall \
    && useradd --system --uid 1337 --gid 1337 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin sharewall \
    && install -d -o 1337 -g 1337 -m 0750 /var/spool/sharewall /var/lib/sharewall
COPY --from=build /opt/sharewall /opt/sharewall
# Bytecode of the standard library and of every package, at levels 0 and 2: python-slim ships
# none for the standard library and nothing is written at run time, so each process would
# otherwise compile the stdlib modules it imports at every start (~0.4 s of a sidecar's start
# and ~1.5 MB of its idle RSS). Level 2 (`-OO`, no docstrings nor asserts) is the sidecar's: the
# injector and the chart run it with PYTHONOPTIMIZE=2; the other commands run at level 0.
RUN python -m compileall -q -j 0 -o 0 -o 2 -x '/(tests?|idle_test)/' \
        "$(python -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')" /opt/sharewall/lib
# A read-only root filesystem works: nothing is written but the spool (blocked decisions and
# the cached snapshot), the registry's SQLite file and /tmp (leaf certificates while they are
# loaded), each a volume. No bytecode is written at run time (pip compiled it at install).
ENV PATH=/opt/sharewall/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    SHAREWALL_SPOOL_DIR=/var/spool/sharewall \
    SHAREWALL_REGISTRY_DB=sqlite+aiosqlite:////var/lib/sharewall/registry.sqlite
VOLUME ["/var/spool/sharewall", "/var/lib/sharewall"]
WORKDIR /var/lib/sharewall
USER 1337:1337
# proxy, proxy admin, transparent capture, registry, injector webhook
EXPOSE 15080 15081 15001 8700 9443
ENTRYPOINT ["sharewall"]
CMD ["--help"]
