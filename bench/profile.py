"""Profile a server under one workload: ``python -m bench.profile SERVER KIND``.

``KIND`` is ``rt`` (32-byte round trips) or ``mib`` (1 MiB echoes).  The
server is sampled with py-spy (``pip install py-spy``) while the raw client
drives it, and the functions with the most samples are printed twice: by
own time (where the CPU is spent) and by total time including callees
(which call paths cost the most).  Example::

    python -m bench.profile greenws-eventlet rt --seconds 8
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import threading

from . import workloads
from .servers import BY_NAME, Running


def sample(server: Running, kind: str, seconds: float, rate: int) -> str:
    """Run the workload while py-spy records; return py-spy's collapsed stacks."""
    py_spy = shutil.which("py-spy") or os.path.join(
        os.path.dirname(sys.executable), "py-spy"
    )
    fd, path = tempfile.mkstemp(suffix=".txt")
    os.close(fd)
    spy = subprocess.Popen(
        [py_spy, "record", "--pid", str(server.pid), "--duration", str(int(seconds)),
         "--rate", str(rate), "--format", "raw", "--threads", "--nonblocking",
         "--output", path],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    stop = threading.Event()

    def drive() -> None:
        fn = workloads.round_trips if kind == "rt" else workloads.throughput
        while not stop.is_set() and spy.poll() is None:
            fn(server, 1.0)

    driver = threading.Thread(target=drive, daemon=True)
    driver.start()
    try:
        _, err = spy.communicate(timeout=seconds + 60)
    finally:
        stop.set()
        if spy.poll() is None:
            spy.kill()
            spy.wait(5)
        driver.join(30)
    if spy.returncode:
        raise SystemExit(f"py-spy failed: {err.decode(errors='replace')[-500:]}")
    with open(path) as f:
        data = f.read()
    os.unlink(path)
    return data


def summarize(collapsed: str, top: int) -> str:
    """Own and total sample counts per function from collapsed stacks."""
    own: collections.Counter = collections.Counter()
    total: collections.Counter = collections.Counter()
    samples = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [f for f in stack.split(";") if not f.startswith("thread (")]
        if not frames:
            continue
        samples += n
        own[frames[-1]] += n
        for f in set(frames):
            total[f] += n
    out = [f"{samples} samples", "", "own time:"]
    for f, n in own.most_common(top):
        out.append(f"  {100 * n / samples:5.1f}%  {f}")
    out += ["", "total time (with callees):"]
    for f, n in total.most_common(top):
        out.append(f"  {100 * n / samples:5.1f}%  {f}")
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    p.add_argument("server", choices=sorted(BY_NAME))
    p.add_argument("kind", choices=["rt", "mib"])
    p.add_argument("--seconds", type=float, default=8)
    p.add_argument("--rate", type=int, default=500)
    p.add_argument("--top", type=int, default=25)
    args = p.parse_args()
    with Running(BY_NAME[args.server]) as server:
        print(summarize(sample(server, args.kind, args.seconds, args.rate), args.top))


if __name__ == "__main__":
    main()
