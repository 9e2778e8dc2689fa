"""A gRPC server on loopback that records the metadata of every call it gets and answers
none of them: what a downstream service would be told, seen from its side."""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc


@dataclass
class MetadataRecorder(grpc.GenericRpcHandler):
    calls: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    port: int = 0
    server: grpc.aio.Server | None = None

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> None:
        metadata = {
            key: value if isinstance(value, str) else value.decode(errors="replace")
            for key, value in handler_call_details.invocation_metadata
        }
        self.calls.append((handler_call_details.method, metadata))
        return None  # the call is answered UNIMPLEMENTED

    async def start(self) -> MetadataRecorder:
        self.server = grpc.aio.server()
        self.server.add_generic_rpc_handlers((self,))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()
        return self

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(0)
