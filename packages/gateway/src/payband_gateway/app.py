"""The FastAPI application: ``create_app(settings)``."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from pydantic.json_schema import models_json_schema
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from payband_audit import AuditSettings, AuditWriter
from payband_contracts import (
    BatchPredictionRequest,
    Outcome,
    PredictionRequest,
    Review,
    field_errors,
)
from payband_contracts.settings import get_settings
from payband_gateway import __version__
from payband_gateway.deps import Services
from payband_gateway.errors import (
    ApiError,
    BodyTooLarge,
    default_code,
    error_response,
    request_id_of,
)
from payband_gateway.inference import InferenceClient, InferenceError
from payband_gateway.keys import KeyRing
from payband_gateway.metrics import GatewayMetrics
from payband_gateway.middleware import GatewayMiddleware
from payband_gateway.routes import health, predictions
from payband_gateway.settings import GatewaySettings

__all__ = ["create_app"]

logger = logging.getLogger("payband_gateway")

# Bodies the routes validate themselves; their schemas are added to the OpenAPI document.
_REQUEST_MODELS = (PredictionRequest, BatchPredictionRequest, Outcome, Review)

DESCRIPTION = """\
Salary-band predictions for job candidates, each with its exact explanation, answered only
after the request and the answer are committed to the audit log (AI Act Art. 12), plus the
ground truth (outcomes) and human reviews (Art. 14) recorded against them.

Send an API key as `X-API-Key: <key>` or `Authorization: Bearer <key>`. Every error body has
the same shape: `code`, `message`, `request_id` and, for invalid requests, `errors` naming
each field and the rule it broke.
"""


def _install_handlers(app: FastAPI) -> None:
    async def api_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, ApiError)
        return error_response(
            error.status,
            error.code,
            error.message,
            request_id=request_id_of(request),
            errors=error.errors,
            headers=error.headers,
        )

    async def invalid_request(request: Request, error: Exception) -> Response:
        assert isinstance(error, RequestValidationError)
        errors = field_errors(error.errors())
        noun = "error" if len(errors) == 1 else "errors"
        return error_response(
            422,
            "validation_failed",
            f"The request is invalid: {len(errors)} {noun}, see `errors`.",
            request_id=request_id_of(request),
            errors=errors,
        )

    async def http_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, StarletteHTTPException)
        return error_response(
            error.status_code,
            default_code(error.status_code),
            str(error.detail).rstrip(".") + ".",
            request_id=request_id_of(request),
            headers=error.headers,
        )

    async def too_large(request: Request, error: Exception) -> Response:
        assert isinstance(error, BodyTooLarge)
        return error_response(
            413,
            "payload_too_large",
            f"The request body is larger than the limit of {error.limit} bytes.",
            request_id=request_id_of(request),
        )

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(BodyTooLarge, too_large)


def _openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
            tags=app.openapi_tags,
            separate_input_output_schemas=False,
        )
        _, defs = models_json_schema(
            [(model, "validation") for model in _REQUEST_MODELS],
            ref_template="#/components/schemas/{model}",
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for name, definition in defs.get("$defs", {}).items():
            components.setdefault(name, definition)
        # The largest batch is a setting (PAYBAND_MAX_BATCH_SIZE): say the one in force.
        batch = components["BatchPredictionRequest"]["properties"]["candidates"]
        batch["maxItems"] = get_settings().max_batch_size
        app.openapi_schema = schema
    return app.openapi_schema


def create_app(
    settings: GatewaySettings | None = None, audit_settings: AuditSettings | None = None
) -> FastAPI:
    """The gateway application; its lifespan connects to MLServer and the audit log."""
    settings = settings or GatewaySettings()
    audit_settings = audit_settings or AuditSettings()
    metrics = GatewayMetrics()
    keys = KeyRing(settings.all_keys())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not len(keys):
            logger.warning("no API keys are configured: every /v1 request will be refused")
        writer = AuditWriter(settings=audit_settings, role=settings.audit_writer_role)
        async with InferenceClient(
            settings.inference_url,
            settings.model_name,
            timeout_s=settings.inference_timeout_s,
            connect_timeout_s=settings.inference_connect_timeout_s,
            connections=settings.inference_connections,
            summary_features=settings.summary_features,
            metrics=metrics,
        ) as inference:
            await writer.start()
            try:
                metrics.audit_available.set_function(lambda: float(writer.available))
                try:
                    await inference.model_info()
                except InferenceError as error:
                    logger.warning(
                        "the model is not known yet (asked again per request): %s", error
                    )
                app.state.services = Services(
                    settings, audit_settings, keys, metrics, inference, writer
                )
                yield
            finally:
                await writer.close()

    app = FastAPI(
        title="payband gateway",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        separate_input_output_schemas=False,
    )
    app.include_router(predictions.router)
    app.include_router(health.router)
    _install_handlers(app)
    app.add_middleware(GatewayMiddleware, metrics=metrics, max_body_bytes=settings.max_body_bytes)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app
