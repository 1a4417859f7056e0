"""Run every benchmark under bench/ in turn (`make bench`) and print their figures.

Each script prints its own figures and ratios against a baseline measured in the same run;
this runner only sequences them so that they do not compete for the machine's two cores.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ORDER = (
    "corpus_report.py",
    "bench_inspect.py",
    "bench_decide.py",
    "bench_registry.py",
    "bench_proxy.py",
)


def main() -> int:
    """Run the benchmarks in a fixed order; return non-zero if any of them failed."""
    scripts = [HERE / name for name in ORDER if (HERE / name).exists()]
    scripts += sorted(p for p in HERE.glob("bench_*.py") if p.name not in ORDER)
    failed = []
    for script in scripts:
        print(f"\n=== {script.name} ===", flush=True)
        started = time.perf_counter()
        code = subprocess.call([sys.executable, str(script), *sys.argv[1:]])
        print(
            f"--- {script.name}: exit {code} in {time.perf_counter() - started:.1f} s", flush=True
        )
        if code:
            failed.append(script.name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
