"""Reading ChatGPT, Claude and NDJSON exports as a stream with caps, the batch items they
become, and how the importer treats the gateway's answers."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest

from memory_layer_cli.importing import (
    ExportError,
    ExportItems,
    Importer,
    ImportRefused,
    ResumeState,
    count_items,
)
from memory_layer_cli.importing.parsers import (
    Conversation,
    Skipped,
    detect_format,
    open_export,
    read_conversations,
)

EXPORTS = Path(__file__).resolve().parents[2] / "data" / "exports"
CHATGPT = EXPORTS / "chatgpt-conversations.json"
CLAUDE = EXPORTS / "claude-conversations.json"


def conversations(path: Path, skipped: Skipped | None = None) -> list[Conversation]:
    with open_export(path) as stream:
        return list(read_conversations(stream, skipped if skipped is not None else Skipped()))


def items(path: Path) -> list[list[dict[str, Any]]]:
    export = ExportItems(path)
    return [unit for phase in export.phases() for unit in phase()]


def test_chatgpt_export_follows_the_branch_shown_last() -> None:
    porto, sourdough = conversations(CHATGPT)
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
    (chess,) = conversations(CLAUDE)
    (pair,) = chess.exchanges()  # the blank last prompt is not a memory
    assert chess.provider == "claude" and chess.title == "Chess openings"
    assert pair.prompt.text.startswith("Which chess opening")
    assert pair.answer is not None and pair.answer.text.startswith("Start with 1...e5")


def test_an_exchange_is_one_unit_with_the_original_times_and_ids() -> None:
    units = items(CHATGPT)
    prompt, answer = units[0]
    assert prompt["prompt"].startswith("Plan a three day weekend")
    assert prompt["message_id"] == "n-trip"
    assert prompt["created_at"] == "2025-10-09T08:53:30.500000+00:00"
    assert prompt["metadata"]["conversation_title"] == "Weekend in Porto"
    assert answer["response_message_id"] == "n-answer-trip"
    # The answer names its prompt by the prompt's message id: the same batch resolves it.
    assert answer["message_id"] == "n-trip"
    assert count_items(ExportItems(CHATGPT).phases()) == sum(len(u) for u in units)


def test_the_zip_is_read_as_exported(tmp_path: Path) -> None:
    archive = tmp_path / "export.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("chat.html", "<html></html>")
        zf.writestr("conversations.json", CLAUDE.read_text())
    assert [c.title for c in conversations(archive)] == ["Chess openings"]


def test_a_zip_bomb_is_refused_before_it_is_unpacked(tmp_path: Path) -> None:
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        # 64 MiB of one byte compresses about a thousand times.
        zf.writestr("conversations.json", b"[" + b" " * (64 * 1024 * 1024) + b"]")
    with pytest.raises(ExportError, match=r"conversations.json \(unpacked\) is larger than"):
        conversations(archive)


def test_a_file_over_the_cap_is_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "conversations.json"
    path.write_text(CLAUDE.read_text())
    with pytest.raises(ExportError, match="more than the 100 an export may have"):
        ExportItems(path, max_bytes=100)


def test_a_zip_whose_header_claims_too_much_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "big.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("conversations.json", CLAUDE.read_text())
    with pytest.raises(ExportError, match="would unpack to"), open_export(archive, max_bytes=100):
        pass


def test_malformed_nodes_and_conversations_are_skipped_and_counted(tmp_path: Path) -> None:
    good = json.loads(CHATGPT.read_text())[0]
    broken = json.loads(CHATGPT.read_text())[0]
    broken["mapping"]["n-trip"]["message"]["content"] = "not an object"
    broken["mapping"]["n-cellars"]["message"]["content"]["parts"] = 7
    path = tmp_path / "conversations.json"
    path.write_text(json.dumps([good, "a string", {"title": "neither"}, broken]))
    skipped = Skipped()
    read = conversations(path, skipped)
    assert len(read) == 2
    assert len(read[0].exchanges()) == 2
    # Only the answers of the broken one are left: no prompt, nothing to import.
    assert read[1].exchanges() == []
    assert skipped == {"not a ChatGPT or Claude conversation": 2, "a malformed message node": 2}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (b"not json", "not JSON"),
        (b'[{"mapping": {}}, {"mapping": ', "not valid JSON"),
    ],
)
def test_what_is_not_an_export_is_refused_clearly(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "conversations.json"
    path.write_bytes(content)
    with pytest.raises(ExportError, match=message):
        items(path)
    with pytest.raises(ExportError, match="No such file"):
        ExportItems(tmp_path / "missing.json")


def test_ndjson_is_read_prompts_first_and_keeps_what_was_exported(tmp_path: Path) -> None:
    answer = {
        "id": "0b7f3f2e-4d1a-4e8b-9a51-1f2d3c4b5a69",
        "kind": "response",
        "text": "A ryokan.",
        "provider": "claude",
        "conversation_id": "trip",
        "message_id": "",
        "url": "",
        "metadata": {},
        "created_at": "2023-04-12T10:15:41Z",
        "prompt_id": "7d3c2b1a-0f9e-4d8c-8b7a-6a5f4e3d2c1b",
        "response_id": "",
    }
    prompt = {
        **answer,
        "id": "7d3c2b1a-0f9e-4d8c-8b7a-6a5f4e3d2c1b",
        "kind": "prompt",
        "text": "Where did we stay?",
        "message_id": "kyoto-q",
        "metadata": {"tab": "travel"},
        "prompt_id": "",
        "response_id": answer["id"],
    }
    path = tmp_path / "memories.ndjson"
    path.write_text(
        "\n".join([json.dumps(answer), "{broken", json.dumps({"kind": "x"}), json.dumps(prompt)])
        + "\n"
    )
    export = ExportItems(path)
    assert export.format == "ndjson"
    units = [unit for phase in export.phases() for unit in phase()]
    assert units == [
        [
            {
                "prompt": "Where did we stay?",
                "provider": "claude",
                "conversation_id": "trip",
                "metadata": {"tab": "travel"},
                "created_at": "2023-04-12T10:15:41Z",
                "message_id": "kyoto-q",
            }
        ],
        [
            {
                "response": "A ryokan.",
                "provider": "claude",
                "conversation_id": "trip",
                "created_at": "2023-04-12T10:15:41Z",
                # No message id of its own: it keeps its id.
                "id": answer["id"],
                # Its prompt, by the prompt's message id (holds for any importing user).
                "message_id": "kyoto-q",
            }
        ],
    ]
    assert export.skipped == {
        "a line that is not JSON": 1,
        "a line that is not an exported memory": 1,
    }


def test_format_is_told_by_the_first_character(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_bytes(b"\xef\xbb\xbf  [ ]")
    with open_export(path) as stream:
        assert detect_format(stream) == "conversations"


def answering(*responses: httpx.Response) -> tuple[httpx.Client, list[dict[str, Any]]]:
    answers = iter(responses)
    sent: list[dict[str, Any]] = []

    def gateway(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/memories/batch"
        sent.append(json.loads(request.content))
        return next(answers)

    return httpx.Client(transport=httpx.MockTransport(gateway), base_url="http://gw"), sent


def stored(n: int) -> httpx.Response:
    return httpx.Response(200, json={"results": [{"status": "stored", "id": "x"}] * n})


def test_batches_keep_exchanges_whole_and_wait_out_rate_limits(tmp_path: Path) -> None:
    client, sent = answering(
        httpx.Response(429, headers={"Retry-After": "3"}, json={"detail": "slow down"}),
        stored(2),
        httpx.Response(503, headers={"Retry-After": "1"}, json={"detail": "down"}),
        httpx.Response(
            200,
            json={
                "results": [
                    {"status": "already_present", "id": "y"},
                    {"status": "refused", "reason": "prompt: bad"},
                ]
            },
        ),
        stored(2),
    )
    waits: list[float] = []
    progress: list[int] = []
    # Three items fit a batch: the second exchange would split, so it opens the next one.
    importer = Importer(
        client, batch_items=3, in_flight=1, sleep=waits.append, on_progress=progress.append
    )
    report = importer.run(ExportItems(CHATGPT).phases())
    assert waits == [3.0, 1.0]
    # Two were refused whole and sent again.
    assert [len(body["items"]) for body in sent] == [2, 2, 2, 2, 2]
    assert (report.stored, report.already_present) == (4, 1)
    assert report.refused == {"prompt: bad": 1}
    assert progress == [2, 2, 2]


def test_a_resumed_import_does_not_send_what_was_acknowledged(tmp_path: Path) -> None:
    state = ResumeState(tmp_path / "state.json", "key")
    state.save(2)
    client, sent = answering(stored(2))
    importer = Importer(client, batch_items=2, in_flight=1, state=ResumeState(state.path, "key"))
    report = importer.run(ExportItems(CHATGPT).phases())
    assert len(sent) == 1 and sent[0]["items"][0]["message_id"] == "s-q"
    assert (report.resumed, report.stored) == (4, 2)
    # Finished: the next run starts over (and finds everything already present).
    assert not state.path.exists()
    assert ResumeState(state.path, "other key").units_done == 0


def test_a_rejected_token_stops_the_import() -> None:
    client, _ = answering(httpx.Response(401, json={"detail": "no"}))
    with pytest.raises(ImportRefused, match="401"):
        Importer(client, sleep=lambda s: None).run(ExportItems(CLAUDE).phases())
