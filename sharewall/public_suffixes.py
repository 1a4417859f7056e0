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

import functools
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

    def _rule(self, start: int) -> bytes:
        end = self._text.find(b"\n", start)
        return bytes(self._text[start:end])

    def add(self, rule: str) -> None:
        """Add `rule` (while the set is being built)."""
        key, encoded = hash(rule) or 1, rule.encode("utf-8")
        hashes, mask = self._hashes, self._mask
        slot = key & mask
        while (found := hashes[slot]) != 0:
            if found == key and self._rule(self._starts[slot]) == encoded:
                return
            slot = (slot + 1) & mask
        text = self._text
        hashes[slot], self._starts[slot] = key, len(text)
        text += encoded
        text.append(10)  # b"\n" ends each rule
        self._count += 1
        if self._count * 4 > len(hashes) * 3:  # past 3/4 full, linear probes grow long
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


class SuffixRules(CompactRules):
    """The list's rules as written (IDN rules in Unicode), asked also in A-label spelling.

    publicsuffixlist's default parse adds every rule's IDNA form too, which costs the start
    punycode-encoding ~460 rules in pure Python (~15 ms, most of reading the list). Here a name
    spelled with A-labels ("xn--p1ai") is turned to its U-labels when asked, and only when it
    is the canonical spelling of a non-ASCII label: the set answers as the default one does."""

    __slots__ = ()

    def __contains__(self, rule: object) -> bool:
        if CompactRules.__contains__(self, rule):
            return True
        if type(rule) is not str or "xn--" not in rule:
            return False
        unicode = _unicode_spelling(rule)
        return unicode is not None and CompactRules.__contains__(self, unicode)


class PublicSuffixes(PublicSuffixList):
    """publicsuffixlist's lookup over `SuffixRules` instead of its frozenset.

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
                if line.startswith("//"):  # a third of the list: comments
                    continue
                rule = line.lower().split(" ")[0].rstrip()
                if rule and not rule.startswith("//"):
                    maxlabel = max(maxlabel, rule.count(".") + 1)
                    yield rule

        self._publicsuffix = SuffixRules(rules())
        self._maxlabel = maxlabel


@functools.lru_cache(maxsize=1024)
def _unicode_spelling(rule: str) -> str | None:
    """`rule` ("!" and "*" kept) with each A-label as its U-label; None when an "xn--" label is
    not the canonical A-label of a non-ASCII label, a spelling the default parse never adds."""
    exception = rule.startswith("!")
    labels = rule.removeprefix("!").split(".")
    for k, label in enumerate(labels):
        if label.startswith("xn--"):
            try:
                unicode = label[4:].encode("ascii").decode("punycode")
            except (UnicodeError, ValueError):
                return None
            # "xn--com-" decodes to "com", and upper case can be encoded: neither is how the
            # default parse spells a rule, so only the exact round trip counts.
            if unicode.isascii() or _a_label(unicode) != label:
                return None
            labels[k] = unicode
    return "!" * exception + ".".join(labels)


def _a_label(label: str) -> str:
    """A non-ASCII, lower-case label's A-label: "xn--" + its punycode (IDNA for these rules)."""
    return "xn--" + label.encode("punycode").decode("ascii")


def load_public_suffixes() -> PublicSuffixList:
    """The bundled list, answering A-label names as publicsuffixlist's default parse does.

    Read line by line rather than whole and split: the ~15,000 lines of a list would be freed
    between the rules the parser keeps, and their pages stay with the process."""
    with open(PSLFILE, encoding="utf-8") as handle:
        return PublicSuffixes(handle, accept_unknown=False, accept_encoded_idn=False)
