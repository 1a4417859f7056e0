"""`text/*` bodies (and anything scanned as text): identifiers in free text."""

from __future__ import annotations

import re
from urllib.parse import unquote_plus

from proxy.inspect.free_text import scan_string
from proxy.inspect.scan import Scan

_ESCAPED = re.compile(r"%(?:2[0-9A-Fa-f]|40|3[ADad])")
# Free text is scanned in slices so the deadline is checked between them.
_SLICE = 16 * 1024
_OVERLAP = 128  # an identifier cut by a slice boundary is seen whole in the next slice


def scan_text(scan: Scan, text: str, *, location: str = "text", is_text: bool = True) -> None:
    """Add findings for identifiers in `text` (`is_text=False` for bytes of unknown format)."""
    if "%" in text and _ESCAPED.search(text):
        # A form or URL mislabelled (or malformed JSON carrying one): `%2B65…` is `+65…`.
        text = unquote_plus(text)
    start = 0
    while start < len(text):
        scan.check_time()
        scan_string(scan, location, text[start : start + _SLICE + _OVERLAP], is_text=is_text)
        start += _SLICE
