"""Smoke test of the benchmark suite, so that ``make bench`` cannot silently rot.

It runs one tiny selection (greenws and simple-websocket on werkzeug, round
trips only) and checks that the suite exits cleanly and prints a ratio.
Timing numbers are not checked: tests never judge performance.
"""

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_bench_quick_runs_and_prints_a_ratio():
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--reps", "1",
         "--seconds", "0.2", "--only", r"^rt/(greenws|simple)-werkzeug$"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "ratio greenws-werkzeug / simple-werkzeug" in proc.stdout, proc.stdout
    assert "FAILED" not in proc.stdout, proc.stdout
