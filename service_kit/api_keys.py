"""What an API key is, written once for the gateway (which checks requests first) and the
memory service (which checks them again and stores the keys)."""

from __future__ import annotations

# Every key starts with this, so a key is told from a JWT before any parsing.
KEY_PREFIX = "mlk_"
# Random bytes after the prefix (URL-safe base64: 43 characters).
KEY_RANDOM_BYTES = 32
# Characters of the key kept in clear for display: the prefix and 8 of the random part.
DISPLAY_PREFIX_CHARS = len(KEY_PREFIX) + 8
# SHA-256: a 256-bit random secret needs no slow hash, only one nobody can invert.
KEY_HASH_BYTES = 32

READ_SCOPE = "read"
WRITE_SCOPE = "write"
KEY_SCOPES = (READ_SCOPE, WRITE_SCOPE)

MAX_LIVE_KEYS_PER_USER = 50
MAX_KEY_NAME_CHARS = 100
MAX_KEY_DAYS = 3650


def is_valid_key_name(value: object) -> bool:
    """1 to 100 printable characters (any script), not only spaces."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= MAX_KEY_NAME_CHARS
        and value.isprintable()
        and bool(value.strip())
    )
