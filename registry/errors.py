"""The registry's one error type, rendered as RFC 9457 problem details by the API and the CLI."""

from __future__ import annotations

from typing import Any

PROBLEM_BASE = "https://sharewall.dev/problems/"
PROBLEM_CONTENT_TYPE = "application/problem+json"


class ApiError(Exception):
    """A failure a client can act on: HTTP status, a stable type slug, a title and a detail.

    `type_slug` becomes the problem `type` URI (`https://sharewall.dev/problems/<slug>`), the
    part clients branch on; `extra` adds members such as `errors`; `headers` go on the response
    (`WWW-Authenticate`, `ETag`).
    """

    def __init__(
        self,
        status: int,
        type_slug: str,
        title: str,
        detail: str | None = None,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail or title)
        self.status = status
        self.type_slug = type_slug
        self.title = title
        self.detail = detail
        self.extra = dict(extra or {})
        self.headers = dict(headers or {})

    @property
    def type_uri(self) -> str:
        return PROBLEM_BASE + self.type_slug

    def to_problem(self, instance: str | None = None) -> dict[str, Any]:
        """The problem-details document (RFC 9457 §3) of this error."""
        doc: dict[str, Any] = {"type": self.type_uri, "title": self.title, "status": self.status}
        if self.detail:
            doc["detail"] = self.detail
        if instance:
            doc["instance"] = instance
        doc.update(self.extra)
        return doc

    def __repr__(self) -> str:
        return f"ApiError({self.status}, {self.type_slug!r}, {self.detail or self.title!r})"


def not_found(entity: str, entity_id: object) -> ApiError:
    """404 for an unknown id."""
    return ApiError(404, "not-found", "Not found", f"no {entity} {entity_id!s}")


def conflict(detail: str, **extra: Any) -> ApiError:
    """409: the request clashes with the current state (duplicate id, host owned by another)."""
    return ApiError(409, "conflict", "Conflict", detail, extra or None)


def invalid_field(field: str, message: str) -> ApiError:
    """422 naming the offending field."""
    return ApiError(
        422,
        "validation-error",
        "Request body is not valid",
        f"{field}: {message}",
        {"errors": [{"field": field, "message": message}]},
    )


def forbidden(detail: str, type_slug: str = "forbidden") -> ApiError:
    """403: authenticated but not allowed."""
    return ApiError(403, type_slug, "Forbidden", detail)
