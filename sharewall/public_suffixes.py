"""The Public Suffix List bundled with publicsuffixlist, held compactly, read offline.

Private suffixes (github.io, s3.amazonaws.com) count too: a wildcard over them spans other
people's names. (tldextract did the same at ~12 MB of the sidecar's memory, importing `requests`
to fetch lists it never did.)

publicsuffixlist keeps its ~11,000 rules as a frozenset of str: ~1.2 MB of every sidecar's idle
memory for a lookup made once per new host. Here the rules are one UTF-8 string and a table of
their hashes (~0.35 MB), under publicsuffixlist's own lookup: `PublicSuffixes` only replaces
the container the library's parser fills (a test compares every rule's answer with the
library's default parse).
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator

from publicsuffixlist import PSLFILE, PublicSuffixList


class CompactRules:
    """A set of rules as one UTF-8 string and an open-addressing table of their hashes.

    Per slot, a rule's `hash()` (8 bytes) and its offset in the string (4 bytes); a hash that
    matches is confirmed against the rule's text, so `in` is exact. Built rule by rule with no
    collection of objects on the side: a set or a sorted list of ~11,000 rules, even freed
    once the table is built, leaves its pages with the process (bench_footprint measured it).
    `hash()` of a str is salted per process: the table is built in the process that asks it."""

    __slots__ = ("_count", "_hashes", "_mask", "_starts", "_text")

    def __init__(self, rules: Iterable[str], size: int = 1 << 14) -> None:
        self._text = bytearray()
        self._count = 0
        self._alloc(size)
        for rule in rules:
            self.add(rule)

    def _alloc(self, size: int) -> None:
        self._hashes = array("q", bytes(8 * size))  # 0: an empty slot
        self._starts = array("I", bytes(4 * size))
        self._mask = size - 1

    def _slot(self, key: int, encoded: bytes) -> tuple[int, bool]:
        """(the slot of `encoded` or the empty one where it would go, whether it is there)."""
        hashes, mask = self._hashes, self._mask
        slot = key & mask
        while (found := hashes[slot]) != 0:
            if found == key and self._rule(self._starts[slot]) == encoded:
                return slot, True
            slot = (slot + 1) & mask
        return slot, False

    def _rule(self, start: int) -> bytes:
        end = self._text.find(b"\n", start)
        return bytes(self._text[start:end])

    def add(self, rule: str) -> None:
        """Add `rule` (while the set is being built)."""
        key, encoded = hash(rule) or 1, rule.encode("utf-8")
        slot, present = self._slot(key, encoded)
        if present:
            return
        self._hashes[slot] = key
        self._starts[slot] = len(self._text)
        self._text += encoded + b"\n"
        self._count += 1
        if self._count * 4 > len(self._hashes) * 3:  # past 3/4 full, linear probes grow long
            self._grow()

    def _grow(self) -> None:
        hashes, starts = self._hashes, self._starts
        self._alloc(2 * len(hashes))
        for key, start in zip(hashes, starts, strict=True):
            if key:
                slot = key & self._mask
                while self._hashes[slot]:
                    slot = (slot + 1) & self._mask
                self._hashes[slot], self._starts[slot] = key, start

    def __len__(self) -> int:
        return self._count

    def __contains__(self, rule: object) -> bool:
        if type(rule) is not str:
            return False
        # `_slot`, inlined: publicsuffixlist asks up to three times per label of a name.
        key, hashes, mask = hash(rule) or 1, self._hashes, self._mask
        slot = key & mask
        while (found := hashes[slot]) != 0:
            if found == key and self._rule(self._starts[slot]) == rule.encode("utf-8"):
                return True
            slot = (slot + 1) & mask
        return False


class PublicSuffixes(PublicSuffixList):
    """publicsuffixlist's lookup over `CompactRules` instead of its frozenset.

    Overrides the library's parser core (`_parse`), which fills `_publicsuffix` (only ever
    asked `in`) and `_maxlabel`."""

    def _parse(  # type: ignore[override]
        self, source: Iterable[str], accept_encoded_idn: bool, only_icann: bool = False
    ) -> None:
        assert not accept_encoded_idn and not only_icann, "not supported here"
        maxlabel = 0

        def rules() -> Iterator[str]:
            nonlocal maxlabel
            for line in source:
                rule = line.lower().split(" ")[0].rstrip()
                if rule and not rule.startswith("//"):
                    maxlabel = max(maxlabel, rule.count(".") + 1)
                    yield rule

        self._publicsuffix = CompactRules(rules())
        self._maxlabel = maxlabel


def _punycode(rule: str) -> str:
    """A lower-case rule's A-label form: `xn--` + punycode of each non-ASCII label."""
    return ".".join(
        label if label.isascii() else "xn--" + label.encode("punycode").decode("ascii")
        for label in rule.split(".")
    )


def load_public_suffixes() -> PublicSuffixList:
    """The bundled list with each IDN rule also in punycode, as publicsuffixlist's default.

    publicsuffixlist runs the `idna` codec over every one of its ~10,000 rules (~25 ms of the
    proxy's start); only the ~460 non-ASCII ones change, and those are already lower case, so
    plain punycode per label gives the same A-labels (a test compares both sets).
    """
    return PublicSuffixes(_rule_lines(), accept_unknown=False, accept_encoded_idn=False)


def _rule_lines() -> Iterator[str]:
    """The file's lines, then the punycode form of its non-ASCII rules, read as they are parsed.

    Streamed rather than read whole and split: the ~15,000 lines of a list would be freed
    between the rules the parser keeps, and their pages stay with the process."""
    encoded: list[str] = []
    with open(PSLFILE, encoding="utf-8") as handle:
        for line in handle:
            if not line.isascii():
                rule = line.lower().split(" ")[0].rstrip()
                if rule and not rule.startswith("//"):
                    exception = rule.startswith("!")
                    encoded.append(("!" if exception else "") + _punycode(rule.lstrip("!")))
            yield line
    yield from encoded
