"""The Public Suffix List as sharewall holds it: the same answers as publicsuffixlist's own."""

from __future__ import annotations

from pathlib import Path

from sharewall.public_suffixes import CompactRules, load_public_suffixes


def test_the_public_suffixes_we_load_answer_as_publicsuffixlist_own_parse() -> None:
    # Every rule of the bundled list, as a name, under names and above, in both Unicode and
    # punycode (IDNA) spellings: our faster, smaller load must give the same public suffix as
    # the library's default parse.
    from publicsuffixlist import PSLFILE, PublicSuffixList

    ours, reference = load_public_suffixes(), PublicSuffixList(accept_unknown=False)
    names = []
    for line in Path(PSLFILE).read_text(encoding="utf-8").splitlines():
        rule = line.lower().split(" ")[0].rstrip()
        if rule and not rule.startswith("//"):
            suffix = rule.lstrip("!").replace("*", "any")
            # the rule's own name, a host under it, and what lies above it
            for name in (suffix, "host." + suffix, "a.b." + suffix, suffix.partition(".")[2]):
                if name:
                    names += [name, name.encode("idna").decode("ascii")]
    names += ["unknown-tld", "host.unknown-tld", "a..b.com", "com.", "HOST.Example.COM"]
    # A-label spellings no rule has: an ASCII label in punycode ("xn--com-" decodes to "com"),
    # an upper-case U-label's encoding, broken punycode, and an A-label beside a U-label.
    rf_upper = "xn--" + "РФ".encode("punycode").decode("ascii")
    for spelling in ("xn--com-", "xn--uk-", rf_upper, "xn--", "xn--zz--9", "xn--ü", "xn--p1ai"):
        names += [spelling, "host." + spelling, "host.xn--co-.uk", "a.xn--p1ai.рф"]
    assert len(names) > 80_000
    assert any(n.startswith("host.xn--") or ".xn--" in n for n in names)
    assert [ours.publicsuffix(n) for n in names] == [reference.publicsuffix(n) for n in names]


def test_compact_rules_grow_and_answer_exactly() -> None:
    rules = [f"r{k}.example" for k in range(3000)] + ["xn--p1ai", "公司.cn", "r1.example"]
    compact = CompactRules(rules, size=4)  # grows many times over
    assert len(compact) == 3002  # a rule given twice is held once
    assert all(rule in compact for rule in rules)
    assert not any(f"r{k}.example" in compact for k in range(3000, 6000))
    assert "" not in compact and "r1.exampl" not in compact and "r1.example." not in compact
    assert b"r1.example" not in compact  # rules are str, as publicsuffixlist asks them
