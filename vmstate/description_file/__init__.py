"""Description files: QEMU-style field tables as TOML data (docs/description-format.md).

:mod:`.reader` checks and reads them (every problem at its ``file:line:col``),
:mod:`.writer` writes descriptions back, :mod:`.schema` is the file's schema.
"""

from vmstate.description_file.reader import (
    PROBLEM_CODES,
    Diagnostic,
    check_description_file,
    check_description_text,
    load_description_file,
    load_description_text,
)
from vmstate.description_file.writer import description_document, dump_description

__all__ = [
    "PROBLEM_CODES",
    "Diagnostic",
    "check_description_file",
    "check_description_text",
    "description_document",
    "dump_description",
    "load_description_file",
    "load_description_text",
]
