"""Open endpoints: liveness, readiness and Prometheus metrics."""

import asyncio
import logging
from collections.abc import Awaitable
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from payband_audit import AuditError
from payband_contracts import ErrorBody
from payband_gateway.deps import Services, services
from payband_gateway.errors import error_response, request_id_of
from payband_gateway.inference import InferenceError

router = APIRouter(tags=["health"])
logger = logging.getLogger("payband_gateway")

Found = Annotated[Services, Depends(services)]


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


async def _check(name: str, check: Awaitable[None]) -> str | None:
    """None when ready; else `name`, with the details only in the log (this route is open)."""
    try:
        await check
    except (InferenceError, AuditError) as error:
        logger.warning("not ready: %s: %s", name, error)
        return name
    return None


@router.get(
    "/readyz",
    summary="Readiness: the inference server and the audit database are reachable",
    responses={503: {"model": ErrorBody, "description": "Not ready; the message says why."}},
)
async def readyz(request: Request, found: Found) -> Response:
    problems = [
        problem
        for problem in await asyncio.gather(
            _check("inference server", found.inference.ready()),
            _check("audit log", found.writer.check()),
        )
        if problem
    ]
    if problems:
        return error_response(
            503,
            "not_ready",
            f"Not ready: the {' and the '.join(problems)} cannot be reached; the log says why.",
            request_id=request_id_of(request),
        )
    return Response('{"status":"ready"}', media_type="application/json")


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(found: Found) -> Response:
    return Response(generate_latest(found.metrics.registry), media_type=CONTENT_TYPE_LATEST)
