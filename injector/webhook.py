"""The mutating admission webhook: `POST /mutate` answers an `admission.k8s.io/v1` AdmissionReview
with the JSON Patch from the pod to `inject_pod(pod)`; `GET /healthz` for the kubelet.

Every request gets an AdmissionReview answer, never an HTTP error: the webhook is registered with
`failurePolicy: Fail`, so a crash would stop every pod of the opted-in namespaces, while a
denial names its reason. What cannot be read or injected is denied (a wall fails closed): a
malformed review, an unknown `sharewall.io/` annotation, a pod that cannot carry the sidecar.
"""

from __future__ import annotations

import base64
import time
from typing import Any

import orjson
import structlog
from aiohttp import web

from injector.config import InjectionError, InjectorConfig
from injector.patch import make_patch
from injector.pod import inject_pod

log = structlog.get_logger("sharewall.injector")

API_VERSION = "admission.k8s.io/v1"
# etcd keeps objects up to 1.5 MiB; a review carries the object (and oldObject on updates).
MAX_REVIEW_BYTES = 4 * 1024 * 1024


def _answer(uid: str, allowed: bool, **fields: Any) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "AdmissionReview",
        "response": {"uid": uid, "allowed": allowed, **fields},
    }


def _deny(uid: str, code: int, message: str) -> dict[str, Any]:
    reason = {400: "BadRequest", 403: "Forbidden", 413: "RequestEntityTooLarge"}.get(
        code, "InternalError"
    )
    status = {
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    return _answer(uid, False, status=status)


def review(body: bytes, config: InjectorConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Answer one AdmissionReview (raw request body); returns (answer, fields for the log line)."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return _deny("", 400, "sharewall injector: the body is not JSON"), {"outcome": "malformed"}
    request = doc.get("request") if isinstance(doc, dict) else None
    if (
        not isinstance(doc, dict)
        or doc.get("apiVersion") != API_VERSION
        or doc.get("kind") != "AdmissionReview"
        or not isinstance(request, dict)
    ):
        message = f"sharewall injector: expected an {API_VERSION} AdmissionReview with a request"
        return _deny("", 400, message), {"outcome": "malformed"}
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        return _deny("", 400, "sharewall injector: request.uid is missing"), {
            "outcome": "malformed"
        }
    fields: dict[str, Any] = {"uid": uid, "namespace": request.get("namespace")}
    kind = request.get("kind") or {}
    if not isinstance(kind, dict) or kind.get("kind") != "Pod" or kind.get("group", "") != "":
        # Registered for pods only; anything else is not ours to change.
        return _answer(uid, True), {**fields, "outcome": "not-a-pod"}
    if request.get("operation") != "CREATE":
        # Containers of a running pod cannot be added: injection happens at creation only.
        return _answer(uid, True), {**fields, "outcome": "not-a-create"}
    pod = request.get("object")
    if not isinstance(pod, dict):
        return _deny(uid, 400, "sharewall injector: request.object is not a pod"), {
            **fields,
            "outcome": "malformed",
        }
    meta = pod.get("metadata") if isinstance(pod.get("metadata"), dict) else {}
    fields["pod"] = meta.get("name") or meta.get("generateName")
    try:
        result = inject_pod(pod, config)
    except InjectionError as exc:
        return _deny(uid, 403, f"sharewall injector: {exc}"), {
            **fields,
            "outcome": "denied",
            "reason": str(exc),
        }
    fields["outcome"] = result.status
    if result.status != "injected":
        return _answer(uid, True), fields
    patch = make_patch(pod, result.pod)
    encoded = base64.b64encode(orjson.dumps(patch)).decode("ascii")
    extra: dict[str, Any] = {"warnings": list(result.warnings)} if result.warnings else {}
    return _answer(uid, True, patchType="JSONPatch", patch=encoded, **extra), fields


async def _mutate(request: web.Request) -> web.Response:
    started = time.perf_counter()
    config: InjectorConfig = request.app[CONFIG_KEY]
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        answer, fields = (
            _deny("", 413, "sharewall injector: review too large"),
            {"outcome": "malformed"},
        )
    else:
        try:
            answer, fields = review(body, config)
        except Exception:
            # Fail closed, as failurePolicy: Fail would: deny this pod, keep serving the others.
            log.exception("injector.internal_error")
            answer, fields = (
                _deny("", 500, "sharewall injector: internal error"),
                {"outcome": "fault"},
            )
            if isinstance(uid := _uid_of(body), str):
                answer["response"]["uid"] = uid
    log.info(
        "injector.review",
        allowed=answer["response"]["allowed"],
        patched="patch" in answer["response"],
        ms=round((time.perf_counter() - started) * 1e3, 3),
        **fields,
    )
    return web.Response(body=orjson.dumps(answer), content_type="application/json")


def _uid_of(body: bytes) -> object:
    try:
        return orjson.loads(body)["request"]["uid"]
    except Exception:
        return None


async def _healthz(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


CONFIG_KEY = web.AppKey("config", InjectorConfig)


def create_app(config: InjectorConfig) -> web.Application:
    """The webhook's aiohttp application (routes `POST /mutate`, `GET /healthz`)."""
    app = web.Application(client_max_size=MAX_REVIEW_BYTES)
    app[CONFIG_KEY] = config
    app.router.add_post("/mutate", _mutate)
    app.router.add_get("/healthz", _healthz)
    return app
