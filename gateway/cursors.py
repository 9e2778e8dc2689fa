"""List cursors as clients see them: memory_service's position, sealed with a MAC the gateway
checks, so a client can only hand back a cursor this server gave that user.

A position names how far into a run of memories created at the same instant the previous
page stopped; a forged one could make a single page scroll past any number of records, so
anything not sealed here is refused before memory_service sees it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from fastapi import HTTPException

INVALID_CURSOR = "Invalid cursor: pass back a next_cursor this server returned"
_MAC_BYTES = 16


class CursorSeal:
    """Seals and opens cursors with a key derived from a server secret (every replica shares
    it, so a cursor from one works on another)."""

    def __init__(self, secret: str) -> None:
        if not secret:
            raise ValueError("sealing cursors needs a secret")
        self._key = hmac.digest(secret.encode(), b"memory-layer list cursor", hashlib.sha256)

    def _mac(self, user_id: str, position: str) -> str:
        message = f"{user_id}\x1f{position}".encode()
        digest = hmac.digest(self._key, message, hashlib.sha256)[:_MAC_BYTES]
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def seal(self, user_id: str, position: str) -> str:
        return f"{position}.{self._mac(user_id, position)}"

    def open(self, user_id: str, cursor: str) -> str:
        """The position a cursor sealed for this user stands for; 400 for anything else."""
        # A sealed cursor is ASCII; anything else was never given out (and compare_digest
        # takes no other strings).
        if not cursor.isascii():
            raise HTTPException(400, INVALID_CURSOR)
        position, dot, mac = cursor.rpartition(".")
        if not dot or not position or not hmac.compare_digest(mac, self._mac(user_id, position)):
            raise HTTPException(400, INVALID_CURSOR)
        return position
