"""What routes depend on: the application's services and the authenticated caller."""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from payband_audit import AuditSettings, AuditWriter
from payband_gateway.errors import ApiError
from payband_gateway.inference import InferenceClient
from payband_gateway.keys import Caller, KeyRing, Role
from payband_gateway.metrics import GatewayMetrics
from payband_gateway.settings import GatewaySettings

__all__ = ["Services", "require", "services"]


@dataclass
class Services:
    """The application's long-lived parts, made in its lifespan."""

    settings: GatewaySettings
    audit_settings: AuditSettings
    keys: KeyRing
    metrics: GatewayMetrics
    inference: InferenceClient
    writer: AuditWriter


async def services(request: Request) -> Services:
    # async: FastAPI runs a plain `def` dependency in a worker thread, a hop per request.
    return request.app.state.services


_api_key = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="An API key (or send it as a Bearer token)."
)
_bearer = HTTPBearer(auto_error=False, description="An API key as a Bearer token.")


def require(*roles: Role) -> Callable[..., Awaitable[Caller]]:
    """A dependency that admits a caller holding any of `roles` (admins always)."""

    async def authenticated(
        request: Request,
        api_key: Annotated[str | None, Security(_api_key)],
        bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
        found: Annotated[Services, Depends(services)],
    ) -> Caller:
        presented = api_key or (bearer.credentials if bearer else None)
        challenge = {"WWW-Authenticate": 'Bearer realm="payband"'}
        if not presented:
            raise ApiError(
                401,
                "unauthenticated",
                "An API key is required: send it in the X-API-Key header "
                "or as 'Authorization: Bearer <key>'.",
                headers=challenge,
            )
        caller = found.keys.caller(presented)
        if caller is None:
            raise ApiError(401, "invalid_api_key", "The API key is not valid.", headers=challenge)
        request.state.caller = caller.name
        if not any(caller.may(role) for role in roles):
            needed = " or ".join(role.value for role in roles)
            raise ApiError(
                403,
                "forbidden",
                f"The API key {caller.name!r} may not do this: it needs the {needed} role.",
            )
        return caller

    return authenticated
