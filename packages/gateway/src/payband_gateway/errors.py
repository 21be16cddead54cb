"""Error answers: every 4xx and 5xx body is a ``payband_contracts.ErrorBody``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from http import HTTPStatus

from starlette.requests import Request
from starlette.responses import Response

from payband_contracts import ErrorBody, FieldError

__all__ = ["ApiError", "BodyTooLarge", "error_response", "request_id_of"]


class ApiError(Exception):
    """An error answer: raised anywhere below a route, turned into its response by a handler."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        errors: Sequence[FieldError] = (),
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.errors = list(errors)
        self.headers = dict(headers or {})


class BodyTooLarge(Exception):
    """The request body grew past the limit while it was being read."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the request body is larger than the limit of {limit} bytes")
        self.limit = limit


def request_id_of(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


def default_code(status: int) -> str:
    """'not_found' for 404, 'method_not_allowed' for 405, ..."""
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "error"


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    request_id: str | None,
    errors: Sequence[FieldError] = (),
    headers: Mapping[str, str] | None = None,
) -> Response:
    body = ErrorBody(code=code, message=message, request_id=request_id, errors=list(errors))
    return Response(
        body.model_dump_json(), status_code=status, media_type="application/json", headers=headers
    )
