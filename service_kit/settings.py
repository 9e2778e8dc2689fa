"""Settings every gRPC service has; each service subclasses it with its own env prefix."""

from __future__ import annotations

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings


class ServiceSettings(BaseSettings):
    host: str = "0.0.0.0"
    # Prometheus metrics on their own port; 0 picks a free one, -1 turns them off.
    metrics_port: int = 0

    # The shared token for service-to-service calls; one name for every service.
    service_token: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("MEMORY_LAYER_SERVICE_TOKEN")
    )

    # Graceful shutdown: how long in-flight RPCs get to finish after SIGTERM.
    drain_seconds: float = Field(default=10.0, ge=0)
    # Servers close connections after this age so clients rebalance onto new pods.
    max_connection_age_seconds: float = Field(default=300.0, gt=0)
    log_level: str = "INFO"

    def required_service_token(self) -> str:
        if self.service_token is None or not self.service_token.get_secret_value():
            raise RuntimeError("MEMORY_LAYER_SERVICE_TOKEN must be set")
        return self.service_token.get_secret_value()
