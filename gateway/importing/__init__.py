"""Importing chat histories: export parsers apart from the uploader that saves them."""

from gateway.importing.parsers import Conversation, ExportError, read_export
from gateway.importing.uploader import Importer, ImportRefused, ImportReport

__all__ = [
    "Conversation",
    "ExportError",
    "ImportRefused",
    "ImportReport",
    "Importer",
    "read_export",
]
