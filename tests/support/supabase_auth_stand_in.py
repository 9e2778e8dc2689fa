"""A real HTTP server on loopback standing in for Supabase's auth server where the dashboard
talks to it: the email sign-in link request (`POST /auth/v1/otp`), answered as Supabase does,
with the CORS headers a browser needs, and recorded."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class OtpRequest:
    path: str
    query: str
    api_key: str
    body: dict[str, Any]


class SupabaseAuthStandIn:
    def __init__(self) -> None:
        self.otp_requests: list[OtpRequest] = []
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _cors(self) -> None:
                self.send_header("Access-Control-Allow-Origin", self.headers.get("Origin", "*"))
                self.send_header("Access-Control-Allow-Headers", "apikey, content-type")
                self.send_header("Access-Control-Allow-Methods", "POST, OPTIONS")

            def do_OPTIONS(self) -> None:
                self.send_response(204)
                self._cors()
                self.end_headers()

            def do_POST(self) -> None:
                path, _, query = self.path.partition("?")
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                if path != "/auth/v1/otp":
                    self.send_response(404)
                    self._cors()
                    self.end_headers()
                    return
                stand_in.otp_requests.append(
                    OtpRequest(path, query, self.headers.get("apikey", ""), body)
                )
                payload = b"{}"
                self.send_response(200)
                self._cors()
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> SupabaseAuthStandIn:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)
