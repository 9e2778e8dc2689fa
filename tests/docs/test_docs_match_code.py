"""The docs describe the code as it is: the configuration page is the one the settings classes
generate, and every setting and every HTTP route is documented somewhere under docs/."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from pydantic import SecretStr

from gateway.app import create_app
from gateway.config import GatewaySettings

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "generate_config_docs.py"
PAGE = REPO / "docs" / "configuration.md"

sys.path.insert(0, str(SCRIPT.parent))
import generate_config_docs  # noqa: E402


def docs_text() -> str:
    pages = [*(REPO / "docs").rglob("*.md"), REPO / "README.md", REPO / "CONTRIBUTING.md"]
    return "\n".join(page.read_text(encoding="utf-8") for page in pages if page.exists())


def check(page: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--check", "--page", str(page)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_configuration_page_is_generated_from_the_settings() -> None:
    result = check(PAGE)
    assert result.returncode == 0, result.stderr


def test_a_setting_changed_without_regenerating_fails_the_check(tmp_path: Path) -> None:
    stale = tmp_path / "configuration.md"
    stale.write_text(
        PAGE.read_text(encoding="utf-8").replace("HTTP listen port.", "Port."), encoding="utf-8"
    )
    result = check(stale)
    assert result.returncode == 1
    assert "out of date" in result.stderr


def test_every_setting_has_a_description_and_a_row() -> None:
    page = PAGE.read_text(encoding="utf-8")
    for _, settings, _ in generate_config_docs.SERVICES:
        for name, field in settings.model_fields.items():
            assert field.description, f"{settings.__name__}.{name}"
            for env in generate_config_docs.env_names(settings, name, field):
                assert f"`{env}`" in page, env


def normalized(route: str) -> str:
    """`/memories/{memory_id}` and `/memories/{id}` name the same route."""
    return re.sub(r"\{[^}]*\}", "{}", route)


def test_every_route_is_documented() -> None:
    settings = GatewaySettings(
        service_token=SecretStr("t" * 32),
        supabase_jwt_secret=SecretStr("s" * 32),
        jwt_issuer="memory-layer-local",
    )
    app = create_app(settings)
    documented = normalized(docs_text())
    routes = [
        f"{method.upper()} {path}"
        for path, operations in app.openapi()["paths"].items()
        for method in operations
    ]
    assert "POST /save-prompt" in routes
    missing = [route for route in routes if normalized(route) not in documented]
    assert not missing, f"routes not documented under docs/: {missing}"
    for mounted in ("/mcp", "/app/"):
        assert mounted in documented
