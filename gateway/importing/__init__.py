"""Importing chat histories: streaming export parsers, the batch items they become, and the
uploader that sends them."""

from gateway.importing.items import ExportItems
from gateway.importing.parsers import Conversation, ExportError
from gateway.importing.uploader import (
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
