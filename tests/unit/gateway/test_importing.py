"""Reading ChatGPT and Claude exports, and how the importer treats the gateway's answers."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import httpx
import pytest

from gateway.importing import ExportError, Importer, ImportRefused, read_export

EXPORTS = Path(__file__).resolve().parents[2] / "data" / "exports"
CHATGPT = EXPORTS / "chatgpt-conversations.json"
CLAUDE = EXPORTS / "claude-conversations.json"


def test_chatgpt_export_follows_the_branch_shown_last() -> None:
    porto, sourdough = read_export(CHATGPT)
    assert (porto.title, porto.provider) == ("Weekend in Porto", "chatgpt")
    pairs = porto.exchanges()
    # The edited prompt replaced "What wine should I try there?"; system, tool and code
    # messages are not memories.
    assert [e.prompt.id for e in pairs] == ["n-trip", "n-cellars"]
    assert [e.answer.id for e in pairs if e.answer] == ["n-answer-trip", "n-answer-cellars"]
    assert pairs[1].answer is not None and "Gaia riverside" in pairs[1].answer.text
    assert pairs[0].prompt.created_at is not None
    assert pairs[0].prompt.created_at.timestamp() == 1760000010.5
    # No current_node: the latest leaf.
    assert [e.prompt.id for e in sourdough.exchanges()] == ["s-q"]


def test_claude_export_reads_text_and_content_blocks() -> None:
    (chess,) = read_export(CLAUDE)
    (pair,) = chess.exchanges()  # the blank last prompt is not a memory
    assert chess.provider == "claude" and chess.title == "Chess openings"
    assert pair.prompt.text.startswith("Which chess opening")
    assert pair.answer is not None and pair.answer.text.startswith("Start with 1...e5")


def test_the_zip_is_read_as_exported(tmp_path: Path) -> None:
    archive = tmp_path / "export.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("chat.html", "<html></html>")
        zf.writestr("conversations.json", CLAUDE.read_text())
    assert [c.title for c in read_export(archive)] == ["Chess openings"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", "not JSON"),
        (json.dumps({"conversations": []}).encode(), "expected a list"),
        (json.dumps([{"title": "x"}]).encode(), "neither a ChatGPT one"),
    ],
)
def test_what_is_not_an_export_is_refused_clearly(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "conversations.json"
    path.write_bytes(content)
    with pytest.raises(ExportError, match=message):
        read_export(path)
    with pytest.raises(ExportError, match="No such file"):
        read_export(tmp_path / "missing.json")


def test_rate_limits_are_waited_out_and_bad_messages_skipped() -> None:
    answers = iter(
        [
            httpx.Response(429, headers={"Retry-After": "3"}, json={"detail": "slow down"}),
            httpx.Response(200, json={}),  # prompt n-trip
            httpx.Response(200, json={}),  # its answer
            httpx.Response(400, json={"detail": "prompt: bad"}),  # prompt n-cellars
            httpx.Response(200, json={}),  # prompt s-q
            httpx.Response(503, headers={"Retry-After": "1"}, json={"detail": "down"}),
            httpx.Response(200, json={}),  # its answer
        ]
    )
    sent: list[tuple[str, dict[str, object]]] = []

    def gateway(request: httpx.Request) -> httpx.Response:
        sent.append((request.url.path, json.loads(request.content)))
        return next(answers)

    waits: list[float] = []
    client = httpx.Client(transport=httpx.MockTransport(gateway), base_url="http://gw")
    importer = Importer(client, sleep=waits.append)
    conversations = read_export(CHATGPT)
    assert importer.messages(conversations) == 6
    assert sum(importer.run(conversations)) == 6
    report = importer.report
    assert (report.prompts, report.answers) == (2, 2)
    assert waits == [3.0, 1.0]
    assert report.skipped == {
        "refused (400): prompt: bad": 1,
        "answer to a skipped prompt": 1,
    }
    path, body = sent[1]
    assert path == "/save-prompt"
    assert body["message_id"] == "n-trip" and body["provider"] == "chatgpt"
    assert body["metadata"]["conversation_title"] == "Weekend in Porto"  # type: ignore[index]
    path, body = sent[2]
    assert path == "/save-response"
    assert (body["message_id"], body["response_message_id"]) == ("n-trip", "n-answer-trip")


def test_a_rejected_token_stops_the_import() -> None:
    client = httpx.Client(
        transport=httpx.MockTransport(lambda r: httpx.Response(401, json={"detail": "no"})),
        base_url="http://gw",
    )
    with pytest.raises(ImportRefused, match="401"):
        list(Importer(client, sleep=lambda s: None).run(read_export(CLAUDE)))
