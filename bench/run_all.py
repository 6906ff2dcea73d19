"""Run every bench/bench_*.py in turn and print their figures; `make bench` calls this."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent


def main() -> int:
    """Each benchmark in its own process, so one's load or failure cannot skew another's figures."""
    failed = []
    for script in sorted(BENCH.glob("bench_*.py")):
        print(f"== {script.name}", flush=True)
        if subprocess.run([sys.executable, str(script)], cwd=BENCH.parent, check=False).returncode != 0:
            failed.append(script.name)
        print(flush=True)
    if failed:
        print(f"benchmarks that failed or missed their budget: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
