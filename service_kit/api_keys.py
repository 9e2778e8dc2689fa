"""What an API key is, and what makes a key's name and scopes valid, written once for the
gateway (which checks requests first) and the memory service (which checks them again and
stores the keys)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, get_args

# Every key starts with this, so a key is told from a JWT before any parsing.
KEY_PREFIX = "mlk_"
# Random bytes after the prefix (URL-safe base64: 43 characters).
KEY_RANDOM_BYTES = 32
# Characters of the key kept in clear for display: the prefix and 8 of the random part.
DISPLAY_PREFIX_CHARS = len(KEY_PREFIX) + 8
# SHA-256: a 256-bit random secret needs no slow hash, only one nobody can invert.
KEY_HASH_BYTES = 32

KeyScope = Literal["read", "write"]
KEY_SCOPES: tuple[KeyScope, ...] = get_args(KeyScope)
READ_SCOPE: KeyScope = "read"
WRITE_SCOPE: KeyScope = "write"

MAX_LIVE_KEYS_PER_USER = 50
MAX_KEY_NAME_CHARS = 100
MAX_KEY_DAYS = 3650


def checked_key_name(value: str) -> str:
    """VALUE if it is 1 to 100 printable characters (any script), not only spaces; else
    ValueError saying what a name must be."""
    if not (0 < len(value) <= MAX_KEY_NAME_CHARS and value.isprintable() and value.strip()):
        raise ValueError(f"a key's name is 1 to {MAX_KEY_NAME_CHARS} printable characters")
    return value


def checked_scopes(scopes: Iterable[str]) -> tuple[KeyScope, ...]:
    """SCOPES in KEY_SCOPES' order if they name each scope at most once and at least one;
    else ValueError saying what scopes must be."""
    given = list(scopes)
    if not given or len(set(given)) != len(given) or not set(given) <= set(KEY_SCOPES):
        raise ValueError(f"scopes name at least one of {', '.join(KEY_SCOPES)}, each once")
    return tuple(scope for scope in KEY_SCOPES if scope in given)
