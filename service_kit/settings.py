"""Settings every gRPC service has; each service subclasses it with its own env prefix."""

from __future__ import annotations

from pydantic import AliasChoices, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from service_kit.identity import Peer, PeerTokens

# The shared token of local mode is trusted like the gateway: one process tree, one owner.
SHARED_PEER = Peer("shared-token", may_grant_admin=True)


def secret(value: SecretStr | None) -> str:
    return value.get_secret_value() if value is not None else ""


def describe_settings_error(exc: ValidationError) -> str:
    """The setting names and what is wrong with them, never the values given: a value
    may be a secret set in the wrong variable."""
    lines = []
    for error in exc.errors(include_url=False, include_input=False, include_context=False):
        where = ".".join(str(part) for part in error["loc"]) or "settings"
        lines.append(f"  {where}: {error['msg']}")
    return "\n".join(lines)


class ServiceSettings(BaseSettings):
    # Each setting is explained by the docstring under it, which becomes its description.
    model_config = SettingsConfigDict(
        extra="ignore", populate_by_name=True, use_attribute_docstrings=True
    )

    host: str = "0.0.0.0"
    """Address the gRPC server listens on."""
    metrics_port: int = 0
    """Port of the Prometheus metrics endpoint; 0 picks a free one, -1 turns metrics off."""
    service_token: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("MEMORY_LAYER_SERVICE_TOKEN")
    )
    """The shared token for service-to-service calls (local mode). Deployments give every
    calling service a token of its own instead.
    """
    drain_seconds: float = Field(default=10.0, ge=0)
    """Graceful shutdown: how long in-flight RPCs get to finish after SIGTERM."""
    max_connection_age_seconds: float = Field(default=300.0, gt=0)
    """The server closes each client connection after this age, so that clients rebalance onto
    new pods.
    """
    log_level: str = "INFO"
    """Logging level (DEBUG, INFO, WARNING, ...)."""

    def caller_tokens(self) -> dict[str, Peer]:
        """Per-caller tokens this service accepts; subclasses name their callers."""
        return {}

    def peer_tokens(self) -> PeerTokens:
        tokens = {token: peer for token, peer in self.caller_tokens().items() if token}
        shared = secret(self.service_token)
        if shared:
            tokens.setdefault(shared, SHARED_PEER)
        if not tokens:
            raise RuntimeError(
                "set MEMORY_LAYER_SERVICE_TOKEN, or the token of each calling service"
            )
        return PeerTokens(tokens)

    def required_service_token(self) -> str:
        if not secret(self.service_token):
            raise RuntimeError("MEMORY_LAYER_SERVICE_TOKEN must be set")
        return secret(self.service_token)
