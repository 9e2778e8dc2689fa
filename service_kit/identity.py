"""How the caller's identity and the service token travel in gRPC metadata.

The gateway verifies the user's token and forwards who they are; each service checks the
service token before believing it. Every calling service has a token of its own, so a
server knows which service is calling and grants the admin role only to callers trusted
with it (the gateway); the one shared token of local mode is trusted like the gateway.
"""

from __future__ import annotations

import contextvars
import hmac
from collections.abc import Mapping
from dataclasses import dataclass

from service_kit.errors import UnauthenticatedError
from service_kit.limits import MAX_USER_ID_CHARS

SERVICE_TOKEN_KEY = "x-service-token"  # noqa: S105 - a header name, not a secret
USER_ID_KEY = "x-user-id"
USER_ROLE_KEY = "x-user-role"
REQUEST_ID_KEY = "x-request-id"
ADMIN_ROLE = "admin"

__all__ = ["MAX_USER_ID_CHARS", "Identity", "Peer", "PeerTokens", "is_valid_user_id"]


def is_valid_user_id(value: object) -> bool:
    """A user id metadata can carry: 1 to 256 printable ASCII characters, no spaces.
    Supabase subjects are UUIDs; anything else is refused before it reaches a service."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= MAX_USER_ID_CHARS
        and all("!" <= char <= "~" for char in value)
    )


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a request acts for, as verified upstream and passed in gRPC metadata."""

    user_id: str
    is_admin: bool = False


@dataclass(frozen=True, slots=True)
class Peer:
    """A service allowed to call: its name, for logs, and whether it may pass on the
    admin role (only the gateway verifies user tokens, so only it can vouch for one)."""

    name: str
    may_grant_admin: bool = False


class PeerTokens:
    """The service tokens a server accepts, each belonging to one calling service."""

    def __init__(self, tokens: Mapping[str, Peer]) -> None:
        if not tokens or any(not token for token in tokens):
            raise RuntimeError("a service needs at least one non-empty service token")
        self._tokens = [(token.encode(), peer) for token, peer in tokens.items()]

    def peer_for(self, presented: str) -> Peer | None:
        offered = presented.encode()
        found = None
        # Every token is compared, so the time taken says nothing about which one matched.
        for token, peer in self._tokens:
            if hmac.compare_digest(offered, token):
                found = peer
        return found


current_identity: contextvars.ContextVar[Identity | None] = contextvars.ContextVar(
    "current_identity", default=None
)
current_request_id: contextvars.ContextVar[str] = contextvars.ContextVar(
    "current_request_id", default="-"
)


class IdentityError(UnauthenticatedError):
    """The metadata does not prove who is calling."""


def identity_from_metadata(metadata: dict[str, str], peers: PeerTokens) -> Identity:
    presented = metadata.get(SERVICE_TOKEN_KEY, "")
    peer = peers.peer_for(presented) if presented else None
    if peer is None:
        raise IdentityError("missing or wrong service token")
    user_id = metadata.get(USER_ID_KEY, "")
    if not is_valid_user_id(user_id):
        raise IdentityError("missing caller identity")
    wants_admin = metadata.get(USER_ROLE_KEY, "") == ADMIN_ROLE
    return Identity(user_id=user_id, is_admin=wants_admin and peer.may_grant_admin)


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
