"""XML and SOAP bodies, parsed by defusedxml: DTDs and entities are refused, never expanded."""

from __future__ import annotations

from typing import TYPE_CHECKING

from proxy.inspect.fields import scan_container_key
from proxy.inspect.keys import Rule, is_identifier_like, key_info
from proxy.inspect.model import FORBIDDEN_XML, MALFORMED_XML
from proxy.inspect.scan import Scan
from proxy.inspect.text import scan_text
from proxy.inspect.walk import child_context, walk

if TYPE_CHECKING:
    import xml.etree.ElementTree as ET

# SOAP/XML-RPC style `<param name="msisdn">…</param>`: the attribute names the value.
_NAMING_ATTRIBUTES = ("name", "key", "id")


def _local(tag: str) -> str:
    # `{http://schemas.xmlsoap.org/soap/envelope/}Envelope` → `Envelope`.
    return tag.rsplit("}", 1)[-1].rsplit(":", 1)[-1]


def scan_xml(scan: Scan, text: str | bytes, ctx: int, *, prefix: str = "xml:") -> None:
    """Scan an XML document; each element is located by its path: `xml:/Envelope/Body/sendSms/msisdn`."""
    # Imported at the first XML body, not at start: ElementTree with defusedxml's parsers is
    # ~0.5 MB of an idle proxy's memory that most sidecars never use; the first XML body pays
    # the import (~5 ms) once.
    from xml.etree.ElementTree import ParseError

    from defusedxml import DefusedXmlException
    from defusedxml.ElementTree import fromstring

    try:
        root = fromstring(text, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException:
        scan.problem(FORBIDDEN_XML)
        return
    except (ParseError, ValueError):
        scan.problem(MALFORMED_XML)
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        scan_text(scan, text, location=prefix + "text" if prefix != "xml:" else "text")
        return
    _walk_element(scan, root, prefix, ctx, 0)


def _walk_element(scan: Scan, element: ET.Element, parent: str, ctx: int, depth: int) -> None:
    if scan.too_deep(depth):
        return
    scan.count_field()
    name = _local(element.tag) if isinstance(element.tag, str) else "#"
    path = f"{parent}/{name}"
    info = key_info(name)
    for attribute, value in element.attrib.items():
        local = _local(attribute)
        if attribute.startswith("{http://www.w3.org/2000/xmlns/}") or local in _NAMING_ATTRIBUTES:
            continue
        walk(scan, value, f"{path}/@{local}", key_info(local), ctx, depth + 1)
    children = list(element)
    if children:
        if info.rule != Rule.CONTENT:  # SOAP's `<Body>` holds the call, not a message
            scan_container_key(scan, path, info, ctx)
        names = tuple(_local(c.tag) if isinstance(c.tag, str) else "#" for c in children)
        inner = child_context(ctx, info, names)
        for child in children:
            _walk_element(scan, child, path, inner, depth + 1)
        loose = " ".join(t.strip() for t in [element.text or "", *(c.tail or "" for c in children)])
        if loose.strip():
            walk(scan, loose.strip(), path, None, ctx, depth + 1)
        return
    text = (element.text or "").strip()
    if not text:
        return
    for attribute in _NAMING_ATTRIBUTES:
        named = element.attrib.get(attribute)
        if named and not is_identifier_like(named):  # a name, not a value, goes in the path
            info = key_info(named)
            path = f"{path}[@{attribute}={named!r}]"
            break
    walk(scan, text, path, info, ctx, depth + 1)
