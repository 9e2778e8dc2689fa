"""Importing chat histories: streaming export parsers, the batch items they become, and the
uploader that sends them."""

from memory_layer_cli.importing.items import ExportItems
from memory_layer_cli.importing.parsers import Conversation, ExportError
from memory_layer_cli.importing.uploader import (
    Importer,
    ImportRefused,
    ImportReport,
    ResumeState,
    count_items,
)

__all__ = [
    "Conversation",
    "ExportError",
    "ExportItems",
    "ImportRefused",
    "ImportReport",
    "Importer",
    "ResumeState",
    "count_items",
]
