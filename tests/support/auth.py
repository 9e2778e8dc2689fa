"""What the gateway tests share about sign-in: signing keys and a JWKS server on loopback,
the tokens a gateway must refuse, and the gateway settings that trust them."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jose import jwk, jws, jwt

from gateway.config import GatewaySettings
from memory_service import metrics as memory_metrics
from tests.support.stack import SERVICE_TOKEN

HS_SECRET = "integration-hs256-secret-0123456789abcdef"

EXTENSION_ORIGIN = "chrome-extension://abcdefghijklmnopabcdefghijklmnop"

REDIS_URL = "redis://127.0.0.1:6379/0"


@dataclass
class SigningKey:
    kid: str
    algorithm: str
    private_pem: bytes
    public_pem: bytes
    public_der: bytes
    public_jwk: dict[str, Any]


def ec_key(kid: str) -> SigningKey:
    private = ec.generate_private_key(ec.SECP256R1())
    return _signing_key(kid, "ES256", private)


def rsa_key(kid: str) -> SigningKey:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return _signing_key(kid, "RS256", private)


def _signing_key(kid: str, algorithm: str, private: Any) -> SigningKey:
    private_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = private.public_key()
    public_pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    public_der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    as_jwk = jwk.construct(public_pem.decode(), algorithm).to_dict()
    as_jwk.update(kid=kid, alg=algorithm, use="sig")
    return SigningKey(kid, algorithm, private_pem, public_pem, public_der, as_jwk)


@dataclass
class JwksServer:
    keys: list[dict[str, Any]]
    fetches: int = 0
    failing: bool = False
    # Set: every fetch waits, before answering anything, until the event is set.
    stall: threading.Event | None = None
    # Seconds between the single bytes of a trickled answer; 0: the answer at once.
    trickle_seconds: float = 0.0
    # Bytes of whitespace added to the key set document.
    padding: int = 0
    in_flight: int = 0
    most_in_flight: int = 0
    url: str = ""
    _server: ThreadingHTTPServer | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def start(self) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != "/auth/v1/.well-known/jwks.json":
                    self.send_error(404)
                    return
                with owner._lock:
                    owner.fetches += 1
                    owner.in_flight += 1
                    owner.most_in_flight = max(owner.most_in_flight, owner.in_flight)
                try:
                    self._answer()
                except OSError:
                    pass
                finally:
                    with owner._lock:
                        owner.in_flight -= 1

            def _answer(self) -> None:
                if owner.stall is not None:
                    owner.stall.wait(60)
                if owner.failing:
                    self.send_error(500)
                    return
                body = json.dumps({"keys": owner.keys}).encode() + b" " * owner.padding
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not owner.trickle_seconds:
                    self.wfile.write(body)
                    return
                for byte in body:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(owner.trickle_seconds)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


@dataclass
class Keys:
    es: SigningKey
    rs: SigningKey
    jwks: JwksServer

    @property
    def issuer(self) -> str:
        return f"{self.jwks.url}/auth/v1"

    def claims(self, sub: str | None = "alice", **extra: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "aud": "authenticated",
            "iss": self.issuer,
            "iat": now,
            "exp": now + 600,
            "role": "authenticated",
        }
        if sub is not None:
            claims["sub"] = sub
        claims.update(extra)
        return {k: v for k, v in claims.items() if v is not None}

    def es256(self, sub: str | None = "alice", *, kid: str | None = None, **extra: Any) -> str:
        return jwt.encode(
            self.claims(sub, **extra),
            self.es.private_pem.decode(),
            algorithm="ES256",
            headers={"kid": kid or self.es.kid},
        )

    def rs256(self, sub: str | None = "alice", **extra: Any) -> str:
        return jwt.encode(
            self.claims(sub, **extra),
            self.rs.private_pem.decode(),
            algorithm="RS256",
            headers={"kid": self.rs.kid},
        )

    def hs256(self, sub: str = "alice", secret: str = HS_SECRET, **extra: Any) -> str:
        return jwt.encode(self.claims(sub, **extra), secret, algorithm="HS256")

    def es256_raw(self, payload: str, **headers: Any) -> str:
        """A correctly signed token whose claims are exactly `payload` (for JSON that
        `json.dumps` would not write, such as 1e999)."""
        return str(
            jws.sign(
                payload.encode(),
                self.es.private_pem.decode(),
                headers={"kid": self.es.kid, **headers},
                algorithm="ES256",
            )
        )

    def es256_with(self, **replaced: str) -> str:
        """Signed claims for alice with some values replaced by raw JSON text."""
        claims = self.claims("alice")
        for name in replaced:
            claims[name] = f"@{name}@"
        text = json.dumps(claims)
        for name, raw in replaced.items():
            text = text.replace(f'"@{name}@"', raw)
        return self.es256_raw(text)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged(header: dict[str, Any], claims: dict[str, Any], hmac_key: bytes | None) -> str:
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    if hmac_key is None:
        return signing_input + "."
    signature = hmac.new(hmac_key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def gateway_settings(keys: Keys, memory_port: int, **overrides: Any) -> GatewaySettings:
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "memory_addr": f"127.0.0.1:{memory_port}",
        "service_token": SERVICE_TOKEN,
        "supabase_url": keys.jwks.url,
        "supabase_jwt_secret": HS_SECRET,
        "cors_origins": [EXTENSION_ORIGIN],
        "rate_limit_ip": "100000/minute",
        "rate_limit_user": "100000/minute",
        "admin_user_ids": ["listed-admin"],
        "grpc_timeout_seconds": 20.0,
    }
    values.update(overrides)
    return GatewaySettings(**values)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def new_user() -> str:
    return f"user-{uuid.uuid4().hex[:12]}"


def memory_rpcs() -> float:
    """RPCs the memory service has answered, health checks excluded."""
    return sum(
        sample.value
        for family in memory_metrics.RPC_SECONDS.collect()
        for sample in family.samples
        if sample.name.endswith("_count")
    )


def rejected_tokens(keys: Keys) -> dict[str, dict[str, str]]:
    now = int(time.time())
    good = keys.claims("alice")
    other_ec = ec_key(keys.es.kid)
    oversize = keys.es256("alice", padding="x" * 9000)
    header, payload, _ = keys.es256("alice").split(".")
    return {
        "no token": {},
        "not a bearer scheme": {"Authorization": f"Basic {keys.es256('alice')}"},
        "alg none": bearer(forged({"alg": "none", "typ": "JWT"}, good, None)),
        "alg none with a signature": bearer(
            forged({"alg": "none", "typ": "JWT"}, good, None) + "c2lnbmF0dXJl"
        ),
        "HS256 signed with the EC public key (PEM)": bearer(
            forged({"alg": "HS256", "kid": keys.es.kid}, good, keys.es.public_pem)
        ),
        "HS256 signed with the EC public key (DER)": bearer(
            forged({"alg": "HS256", "kid": keys.es.kid}, good, keys.es.public_der)
        ),
        "HS256 signed with the RSA public key (PEM)": bearer(
            forged({"alg": "HS256", "kid": keys.rs.kid}, good, keys.rs.public_pem)
        ),
        "HS256 signed with the RSA public key (DER)": bearer(
            forged({"alg": "HS256", "kid": keys.rs.kid}, good, keys.rs.public_der)
        ),
        "HS256 with a wrong secret": bearer(keys.hs256("alice", secret="x" * 40)),
        "expired beyond leeway": bearer(keys.es256("alice", iat=now - 7200, exp=now - 120)),
        "nbf in the future": bearer(keys.es256("alice", nbf=now + 3600)),
        "wrong aud": bearer(keys.es256("alice", aud="anon")),
        "missing aud": bearer(keys.es256("alice", aud=None)),
        "wrong iss": bearer(keys.es256("alice", iss="https://evil.example/auth/v1")),
        "iss with a trailing slash": bearer(keys.es256("alice", iss=keys.issuer + "/")),
        "missing sub": bearer(keys.es256(None)),
        "missing exp": bearer(keys.es256("alice", exp=None)),
        "missing iat": bearer(keys.es256("alice", iat=None)),
        "unknown kid": bearer(keys.es256("alice", kid="no-such-kid")),
        "ES256 header on the RSA kid": bearer(keys.es256("alice", kid=keys.rs.kid)),
        "bad signature": bearer(
            jwt.encode(
                good,
                other_ec.private_pem.decode(),
                algorithm="ES256",
                headers={"kid": keys.es.kid},
            )
        ),
        "tampered payload": bearer(
            f"{header}.{b64(json.dumps({**good, 'sub': 'bob'}).encode())}.{_}"
        ),
        "more than 8 KiB": bearer(oversize),
        "two segments": bearer(f"{header}.{payload}"),
        "four segments": bearer(f"{header}.{payload}.{_}.{_}"),
        "not base64url": bearer("!!!.@@@.###"),
        "header not JSON": bearer(f"{b64(b'not json')}.{payload}.{_}"),
        "header a JSON list": bearer(f"{b64(b'[1, 2]')}.{payload}.{_}"),
        "exp NaN": bearer(keys.es256_with(exp="NaN")),
        "exp Infinity": bearer(keys.es256_with(exp="Infinity")),
        "exp 1e999": bearer(keys.es256_with(exp="1e999")),
        "exp a string": bearer(keys.es256_with(exp=f'"{now + 600}"')),
        "iat a string": bearer(keys.es256_with(iat=f'"{now}"')),
        "iat NaN": bearer(keys.es256_with(iat="NaN")),
        "nbf -Infinity": bearer(keys.es256_with(nbf="-Infinity")),
        "iat in the future": bearer(keys.es256("alice", iat=now + 3600, exp=now + 7200)),
        "crit header": bearer(
            keys.es256_raw(json.dumps(good), crit=["exp-ext"], **{"exp-ext": True})
        ),
        "sub with a control character": bearer(keys.es256("ali\x07ce")),
        "sub with a newline": bearer(keys.es256("alice\nx-user-role: admin")),
        "sub not ASCII": bearer(keys.es256("alicé")),
        "sub with a space": bearer(keys.es256("alice smith")),
        "sub a lone surrogate": bearer(keys.es256_with(sub='"\\ud800"')),
        "sub longer than 256": bearer(keys.es256("a" * 257)),
        "sub a number": bearer(keys.es256_with(sub="42")),
    }


REJECTED_CASES = [
    "no token",
    "not a bearer scheme",
    "alg none",
    "alg none with a signature",
    "HS256 signed with the EC public key (PEM)",
    "HS256 signed with the EC public key (DER)",
    "HS256 signed with the RSA public key (PEM)",
    "HS256 signed with the RSA public key (DER)",
    "HS256 with a wrong secret",
    "expired beyond leeway",
    "nbf in the future",
    "wrong aud",
    "missing aud",
    "wrong iss",
    "iss with a trailing slash",
    "missing sub",
    "missing exp",
    "missing iat",
    "unknown kid",
    "ES256 header on the RSA kid",
    "bad signature",
    "tampered payload",
    "more than 8 KiB",
    "two segments",
    "four segments",
    "not base64url",
    "header not JSON",
    "header a JSON list",
    "exp NaN",
    "exp Infinity",
    "exp 1e999",
    "exp a string",
    "iat a string",
    "iat NaN",
    "nbf -Infinity",
    "iat in the future",
    "crit header",
    "sub with a control character",
    "sub with a newline",
    "sub not ASCII",
    "sub with a space",
    "sub a lone surrogate",
    "sub longer than 256",
    "sub a number",
]
