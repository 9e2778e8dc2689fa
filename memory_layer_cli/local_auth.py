"""The HS256 secret of local mode, kept in the data dir so tokens outlive restarts."""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from gateway.tokens import LOCAL_ISSUER

LOCAL_AUTH_FILE = "local-auth.json"


@dataclass(frozen=True)
class LocalAuth:
    jwt_secret: str
    issuer: str


def local_auth_path(data_dir: Path) -> Path:
    return data_dir / LOCAL_AUTH_FILE


def load_or_create_local_auth(data_dir: Path) -> LocalAuth:
    """The HS256 secret of local mode, created once so tokens outlive restarts."""
    path = local_auth_path(data_dir)
    if path.exists():
        stored = json.loads(path.read_text())
        return LocalAuth(stored["jwt_secret"], stored["issuer"])
    auth = LocalAuth(secrets.token_urlsafe(48), LOCAL_ISSUER)
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"jwt_secret": auth.jwt_secret, "issuer": auth.issuer}, handle)
    return auth
