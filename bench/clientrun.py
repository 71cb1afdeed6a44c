"""``python -m bench.clientrun KIND NAME PORT SECONDS``: one repetition of a
client workload (a key of :data:`bench.workloads.CLIENT_KINDS`) with client
library NAME, in a process of its own; prints the figure (see
:mod:`bench.baseline`)."""

from __future__ import annotations

import sys

from . import workloads


def main(argv: list) -> int:
    kind, name, port, seconds = argv
    fn = workloads.CLIENT_KINDS[kind][1]
    print(fn(name, int(port), float(seconds)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
