"""Validate manifests against the Kubernetes OpenAPI schemas that `kubernetes-validate` ships
(offline, strict: an unknown field is an error, as `kubectl apply --validate=strict` says)."""

from __future__ import annotations

import functools
import re
from typing import Any

import jsonschema
from kubernetes_validate import utils
from referencing import Registry, Resource

# The oldest release with native sidecars (SidecarContainers beta, on by default) and the
# release where they are stable.
VERSIONS = ("1.29", "1.33")


@functools.lru_cache(maxsize=64)
def _validator(version: str, kind: str, api_version: str) -> jsonschema.Validator:
    # kubernetes_validate.validate() reads the schema files on every call (about 0.4 s); the
    # same files and the same validator, built once per (version, kind).
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    folder = f"kubernetes-json-schema/v{version}.0-local-strict"
    schema = utils.schema_contents(f"{folder}/{kind.lower()}-{group_version}.json", version)
    definitions = utils.schema_contents(f"{folder}/_definitions.json", version)
    registry = Resource.from_contents(definitions) @ (Resource.from_contents(schema) @ Registry())
    return jsonschema.Draft202012Validator(schema, registry=registry)


def schema_errors(manifest: dict[str, Any]) -> list[str]:
    """One line per schema error of `manifest` in each Kubernetes version (empty when valid)."""
    errors = []
    for version in VERSIONS:
        validator = _validator(version, manifest["kind"], manifest["apiVersion"])
        for error in validator.iter_errors(manifest):
            where = "/".join(str(p) for p in error.absolute_path)
            errors.append(f"{version}: {where}: {error.message}")
    return errors


def assert_valid(manifest: dict[str, Any]) -> None:
    """Fail with every schema error of `manifest` in 1.29 and 1.33."""
    errors = schema_errors(manifest)
    name = f"{manifest.get('kind')} {(manifest.get('metadata') or {}).get('name')}"
    assert not errors, f"{name}: " + "; ".join(errors)
