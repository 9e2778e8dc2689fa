"""The garbage collector in a long-running service process."""

from __future__ import annotations

import gc


def freeze_startup_heap() -> None:
    """Exempt what startup built from the garbage collector's full passes.

    A full pass visits every tracked object and holds the GIL while it does: with the
    model loaded, half a million objects and ~350 ms here, a stall of every request in
    flight. What startup built (modules, the model, clients) lives as long as the process,
    so it is collected once now and moved to the permanent generation; later passes visit
    only what requests create."""
    gc.collect()
    gc.freeze()
