"""What a fresh interpreter has loaded after running some code: for tests that keep heavy
packages out of a process until it needs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
_REPORT = """
import json as _json, sys as _sys
print(_json.dumps(sorted({name.split(".")[0] for name in _sys.modules})))
"""


def packages_loaded_by(code: str) -> set[str]:
    """The top-level packages loaded in a new interpreter, run from the repository root,
    once `code` has run."""
    out = subprocess.run(
        [sys.executable, "-c", code + _REPORT],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))
