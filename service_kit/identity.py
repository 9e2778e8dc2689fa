"""How the caller's identity and the service token travel in gRPC metadata.

The gateway verifies the user's token and forwards who they are; each service checks the
shared service token before believing it.
"""

from __future__ import annotations

import contextvars
import hmac
from dataclasses import dataclass

from service_kit.errors import UnauthenticatedError

SERVICE_TOKEN_KEY = "x-service-token"  # noqa: S105 - a header name, not a secret
USER_ID_KEY = "x-user-id"
USER_ROLE_KEY = "x-user-role"
REQUEST_ID_KEY = "x-request-id"
ADMIN_ROLE = "admin"
MAX_USER_ID_CHARS = 256


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a request acts for, as verified upstream and passed in gRPC metadata."""

    user_id: str
    is_admin: bool = False


current_identity: contextvars.ContextVar[Identity | None] = contextvars.ContextVar(
    "current_identity", default=None
)
current_request_id: contextvars.ContextVar[str] = contextvars.ContextVar(
    "current_request_id", default="-"
)


class IdentityError(UnauthenticatedError):
    """The metadata does not prove who is calling."""


def identity_from_metadata(metadata: dict[str, str], service_token: str) -> Identity:
    presented = metadata.get(SERVICE_TOKEN_KEY, "")
    if not presented or not hmac.compare_digest(presented.encode(), service_token.encode()):
        raise IdentityError("missing or wrong service token")
    user_id = metadata.get(USER_ID_KEY, "")
    if not user_id or len(user_id) > MAX_USER_ID_CHARS:
        raise IdentityError("missing caller identity")
    return Identity(user_id=user_id, is_admin=metadata.get(USER_ROLE_KEY, "") == ADMIN_ROLE)


def outgoing_metadata(
    identity: Identity, service_token: str, request_id: str | None = None
) -> tuple[tuple[str, str], ...]:
    """Metadata a client sends so a service acts for identity."""
    md = [(SERVICE_TOKEN_KEY, service_token), (USER_ID_KEY, identity.user_id)]
    if identity.is_admin:
        md.append((USER_ROLE_KEY, ADMIN_ROLE))
    if request_id:
        md.append((REQUEST_ID_KEY, request_id))
    return tuple(md)


def require_identity() -> Identity:
    identity = current_identity.get()
    if identity is None:
        raise IdentityError("no verified identity for this call")
    return identity
