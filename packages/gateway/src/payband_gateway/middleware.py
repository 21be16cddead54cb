"""The outermost layer of every request: request id, body size limit, metrics, access log.

A plain ASGI middleware (not BaseHTTPMiddleware, which costs a task per request), and the one
place that turns an unexpected exception into a 500 with the contract's error body.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from payband_gateway.errors import BodyTooLarge, error_response
from payband_gateway.metrics import GatewayMetrics

__all__ = ["GatewayMiddleware"]

logger = logging.getLogger("payband_gateway.access")
error_logger = logging.getLogger("payband_gateway")

# A client's request id is kept if it is short and plain; otherwise a fresh one is made.
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


class GatewayMiddleware:
    def __init__(self, app: ASGIApp, *, metrics: GatewayMetrics, max_body_bytes: int) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        given = _header(scope, b"x-request-id")
        request_id = given if given and _REQUEST_ID.match(given) else uuid.uuid4().hex
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = request_id
        status = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        received = 0

        async def receive_limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise BodyTooLarge(self.max_body_bytes)
            return message

        try:
            length = _header(scope, b"content-length")
            if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
                await error_response(
                    413,
                    "payload_too_large",
                    f"The request body has {int(length)} bytes; at most "
                    f"{self.max_body_bytes} are accepted.",
                    request_id=request_id,
                )(scope, receive, send_with_id)
            else:
                await self.app(scope, receive_limited, send_with_id)
        except Exception as error:
            error_logger.error(
                "unhandled error",
                exc_info=True,
                extra={"fields": {"request_id": request_id, "detail": type(error).__name__}},
            )
            if not response_started:
                await error_response(
                    500,
                    "internal_error",
                    "The gateway failed unexpectedly; the request id identifies it in the logs.",
                    request_id=request_id,
                )(scope, receive, send_with_id)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            elapsed = time.perf_counter() - started
            labels = {"route": template, "method": scope["method"], "status": str(status)}
            self.metrics.requests.labels(**labels).inc()
            self.metrics.request_duration.labels(**labels).observe(elapsed)
            logger.info(
                "%s %s %s",
                scope["method"],
                template,
                status,
                extra={
                    "fields": {
                        **labels,
                        "duration_ms": round(elapsed * 1000, 2),
                        "request_id": request_id,
                        "caller": state.get("caller"),
                    }
                },
            )
