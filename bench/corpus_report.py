"""Run the decision corpus through `check_call` and print precision and recall per data category.

Usage: `.venv/bin/python bench/corpus_report.py [--registry-file F] [--corpus DIR] [--engine E]`

For every case the expected categories (`expect.categories`) are compared with the categories
the inspector found: a category found and expected is a true positive, found but not expected a
false positive, expected but not found a false negative. Cases whose decision (action or reason
codes) differs from the expectation are listed too. This module also holds the corpus loader the
corpus test uses, so that the test and the report read the cases the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
CORPUS_DIR = ROOT / "tests" / "corpus"
SAMPLE_REGISTRY = ROOT / "examples" / "registry.yaml"

_CASE_KEYS = frozenset(
    {"id", "description", "method", "url", "headers", "body", "body_file", "purpose", "source"}
    | {"expect"}
)


@dataclass(frozen=True)
class Expectation:
    """What a reviewer expects of one call: the action, reason codes and data categories."""

    action: str
    reasons: frozenset[str]
    categories: frozenset[str]


@dataclass(frozen=True)
class Case:
    """One realistic call of the corpus, as `sharewall check` would be given it."""

    id: str
    description: str
    method: str
    url: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    purpose: str | None
    source_workload: str | None
    source_namespace: str | None
    expect: Expectation
    file: str = field(default="", compare=False)


def _parse_case(raw: dict[str, Any], path: Path, corpus_dir: Path) -> Case:
    where = f"{path.name}: case {raw.get('id', '?')!r}"
    unknown = set(raw) - _CASE_KEYS
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}")
    if "body_file" in raw:
        body = (corpus_dir / "files" / raw["body_file"]).read_bytes()
    else:
        body = str(raw.get("body") or "").encode("utf-8")
    headers = tuple((str(k), str(v)) for k, v in (raw.get("headers") or {}).items())
    source = raw.get("source") or {}
    expect = raw["expect"]
    return Case(
        id=raw["id"],
        description=raw.get("description", ""),
        method=raw["method"],
        url=raw["url"],
        headers=headers,
        body=body,
        purpose=raw.get("purpose"),
        source_workload=source.get("workload"),
        source_namespace=source.get("namespace"),
        expect=Expectation(
            action=expect["action"],
            reasons=frozenset(expect.get("reasons") or ()),
            categories=frozenset(expect.get("categories") or ()),
        ),
        file=path.name,
    )


def load_cases(corpus_dir: Path = CORPUS_DIR) -> list[Case]:
    """Every case of every `*.yaml` file of the corpus, ids unique, in file order."""
    cases: list[Case] = []
    seen: set[str] = set()
    for path in sorted(corpus_dir.glob("*.yaml")):
        for raw in yaml.safe_load(path.read_text(encoding="utf-8")) or ():
            case = _parse_case(raw, path, corpus_dir)
            if case.id in seen:
                raise ValueError(f"{path.name}: duplicate case id {case.id!r}")
            seen.add(case.id)
            cases.append(case)
    return cases


async def decide_cases(
    cases: list[Case],
    registry_file: Path = SAMPLE_REGISTRY,
    engine_kind: str = "embedded",
    opa_url: str | None = None,
) -> dict[str, Any]:
    """Decide every case with `check_call` on one engine; case id → `Decision`."""
    from proxy.check import check_call
    from proxy.decide import Decider
    from proxy.engines import create_engine
    from sharewall.recipients import RecipientIndex
    from sharewall.registry_file import load_registry_file

    snapshot = load_registry_file(registry_file)
    engine = create_engine(engine_kind, opa_url=opa_url)
    try:
        decider = Decider(engine)
        if not await decider.set_snapshot(snapshot):
            raise RuntimeError(f"the {engine_kind} engine refused {registry_file}")
        index = RecipientIndex(snapshot)
        return {
            case.id: await check_call(
                decider,
                index,
                method=case.method,
                url=case.url,
                headers=case.headers,
                body=case.body,
                purpose=case.purpose,
                source_workload=case.source_workload,
                source_namespace=case.source_namespace,
            )
            for case in cases
        }
    finally:
        await engine.close()


@dataclass
class Score:
    """True positives, false positives and false negatives of one category."""

    tp: int = 0
    fp: int = 0
    fn: int = 0

    @property
    def precision(self) -> float | None:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else None

    @property
    def recall(self) -> float | None:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else None


def score_categories(cases: list[Case], found: dict[str, frozenset[str]]) -> dict[str, Score]:
    """Per-category scores of the found categories against the expected ones."""
    scores: dict[str, Score] = {}
    for case in cases:
        expected, got = case.expect.categories, found[case.id]
        for category in expected | got:
            score = scores.setdefault(category, Score())
            if category in expected and category in got:
                score.tp += 1
            elif category in got:
                score.fp += 1
            else:
                score.fn += 1
    return scores


def _pct(value: float | None) -> str:
    return "   -  " if value is None else f"{value * 100:5.1f}%"


def main(argv: list[str] | None = None) -> int:
    """Print the per-category table, the overall figures and the cases that disagree."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registry-file", type=Path, default=SAMPLE_REGISTRY)
    parser.add_argument("--corpus", type=Path, default=CORPUS_DIR)
    parser.add_argument("--engine", choices=("embedded", "opa"), default="embedded")
    parser.add_argument("--opa-url", help="OPA server for --engine opa")
    args = parser.parse_args(argv)

    cases = load_cases(args.corpus)
    decisions = asyncio.run(decide_cases(cases, args.registry_file, args.engine, args.opa_url))
    found = {cid: frozenset(d.categories) for cid, d in decisions.items()}
    scores = score_categories(cases, found)

    print(f"corpus: {len(cases)} cases from {args.corpus}")
    print(f"{'category':28} {'TP':>4} {'FP':>4} {'FN':>4} {'precision':>10} {'recall':>8}")
    total = Score()
    for category in sorted(scores):
        s = scores[category]
        total.tp, total.fp, total.fn = total.tp + s.tp, total.fp + s.fp, total.fn + s.fn
        print(
            f"{category:28} {s.tp:4} {s.fp:4} {s.fn:4} {_pct(s.precision):>10} {_pct(s.recall):>8}"
        )
    print(
        f"{'overall (micro)':28} {total.tp:4} {total.fp:4} {total.fn:4} "
        f"{_pct(total.precision):>10} {_pct(total.recall):>8}"
    )

    exact = sum(1 for c in cases if c.expect.categories == found[c.id])
    print(f"cases with exactly the expected categories: {exact}/{len(cases)}")
    wrong: Counter[str] = Counter()
    for case in cases:
        decision = decisions[case.id]
        got_reasons = frozenset(decision.reason_codes)
        if decision.action != case.expect.action or got_reasons != case.expect.reasons:
            wrong["decision"] += 1
            print(
                f"  decision differs  {case.id}: expected {case.expect.action} "
                f"{sorted(case.expect.reasons)}, got {decision.action} {sorted(got_reasons)}"
                + (f" fault={decision.fault}" if decision.fault else "")
            )
        if case.expect.categories != found[case.id]:
            missing = sorted(case.expect.categories - found[case.id])
            extra = sorted(found[case.id] - case.expect.categories)
            print(f"  categories differ {case.id}: missing {missing} extra {extra}")
    print(f"cases with the expected decision: {len(cases) - wrong['decision']}/{len(cases)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
