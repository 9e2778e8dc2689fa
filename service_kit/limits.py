"""Limits a caller can rely on: the gateway checks them first, the services again."""

MAX_TEXT_CHARS = 50_000
MAX_TOP_K = 50
MAX_PAGE_SIZE = 200
MAX_METADATA_ENTRIES = 32
MAX_FIELD_CHARS = 512
MAX_CONTEXT_TOKENS = 8_000

MAX_MESSAGE_CHARS = 50_000
MAX_HISTORY_TURNS = 100
MAX_TURN_CHARS = 50_000
MAX_MODEL_CHARS = 200
# Search, context and chat retrieval read at most this much of a query (the rest is cut, not
# refused): keyword matching sees these characters, the embedding the model's window of them.
MAX_QUERY_CHARS = 2_000
# Verified user ids (a token's `sub`) travel in gRPC metadata: printable ASCII, no spaces.
MAX_USER_ID_CHARS = 256

# Items in one batch save, and how far in the future an item's original time may lie
# (clock skew between the machine that wrote it and this one).
MAX_BATCH_ITEMS = 256
MAX_CREATED_AT_SKEW_SECONDS = 300
