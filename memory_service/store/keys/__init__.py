"""Where API keys are kept: one interface, an adapter per deployment (a file beside the
embedded store, a payload-only collection on the Qdrant server)."""

from memory_service.store.keys.base import KeyRecord, KeyStore, TooManyKeysError

__all__ = ["KeyRecord", "KeyStore", "TooManyKeysError"]
