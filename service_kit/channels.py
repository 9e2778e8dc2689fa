"""Client channels to the services: round-robin over every address a name resolves to,
keepalive, fast reconnects, and retries on UNAVAILABLE for exactly the RPCs the proto marks
as free of side effects (`option idempotency_level`)."""

from __future__ import annotations

import json

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.descriptor_pb2 import MethodOptions

SAFE_TO_RETRY = (MethodOptions.NO_SIDE_EFFECTS, MethodOptions.IDEMPOTENT)
MAX_RECEIVE_MESSAGE_BYTES = 8 * 1024 * 1024


def retryable_methods(service: ServiceDescriptor) -> tuple[str, ...]:
    """The RPCs a client may repeat: writes are not retried blindly (a save may have landed
    before the error), nor is generation (a second paid answer)."""
    return tuple(
        method.name
        for method in service.methods
        if method.GetOptions().idempotency_level in SAFE_TO_RETRY
    )


def channel_options(service: ServiceDescriptor) -> list[tuple[str, str | int]]:
    service_config: dict[str, object] = {"loadBalancingConfig": [{"round_robin": {}}]}
    reads = retryable_methods(service)
    if reads:
        service_config["methodConfig"] = [
            {
                "name": [{"service": service.full_name, "method": method} for method in reads],
                "retryPolicy": {
                    "maxAttempts": 3,
                    "initialBackoff": "0.1s",
                    "maxBackoff": "1s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    return [
        ("grpc.service_config", json.dumps(service_config)),
        ("grpc.enable_retries", 1),
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.keepalive_timeout_ms", 20_000),
        # Pings without calls count as abuse at the server's defaults.
        ("grpc.keepalive_permit_without_calls", 0),
        # A restarted service is found again within seconds, not minutes.
        ("grpc.initial_reconnect_backoff_ms", 500),
        ("grpc.min_reconnect_backoff_ms", 500),
        ("grpc.max_reconnect_backoff_ms", 3_000),
        ("grpc.max_receive_message_length", MAX_RECEIVE_MESSAGE_BYTES),
    ]


def service_channel(address: str, service: ServiceDescriptor) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(address, options=channel_options(service))
