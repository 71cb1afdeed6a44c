"""``--baseline PATH``: greenws's rows measured again with another greenws.

For a before/after comparison in one run (the machine is shared and noisy:
only figures measured side by side compare).  Every greenws server and
client is measured twice, interleaved: as this tree has it, and with the
``greenws`` package of the source tree ``PATH`` (say a ``git worktree`` of
main), under the id ``<id>@base``.  The report then gives new / base per
row.

Only ``greenws`` comes from ``PATH``: its package is copied to a temporary
directory, the working directory (first on ``sys.path``) of the processes
that measure it and first on their ``PYTHONPATH``, so that the bench itself
(``bench.serve``, the apps, the workloads) stays this tree's.  The C
speedups are built for that copy if ``PATH`` has none built, since a
baseline with the pure-Python unmask would flatter the new code.
"""

from __future__ import annotations

import atexit
import dataclasses
import filecmp
import glob
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Dict, List, Optional

from .servers import REPO, ServerSpec

#: Appended to the id (and library name) of a baseline measurement.
SUFFIX = "@base"

#: The client libraries (bench.workloads.CLIENTS) that are greenws.
GREENWS_CLIENTS = ("greenws.Client", "greenws.AioClient")


def prepare(path: str) -> str:
    """Make the directory whose ``greenws`` is ``PATH``'s; check and say how
    it imports.  Removed when the bench exits."""
    tree = os.path.abspath(path)
    source = os.path.join(tree, "greenws")
    if not os.path.isfile(os.path.join(source, "__init__.py")):
        raise SystemExit(f"--baseline {path}: no greenws package in {tree}")
    overlay = tempfile.mkdtemp(prefix="greenws-baseline-")
    atexit.register(shutil.rmtree, overlay, True)
    package = os.path.join(overlay, "greenws")
    shutil.copytree(source, package, ignore=shutil.ignore_patterns("__pycache__"))
    if not _speedups(package):
        _build_speedups(tree, package, overlay)
    out = subprocess.run(
        [sys.executable, "-c",
         "import sys, greenws, greenws.protocol; print(greenws.__file__, "
         "'C speedups' if 'greenws._speedups' in sys.modules else "
         "'NO C speedups (pure-Python unmask)')"],
        cwd=overlay, env=environ(overlay), capture_output=True, text=True,
        timeout=60,
    )
    if out.returncode != 0:
        raise SystemExit(f"--baseline {path}: greenws does not import: {out.stderr}")
    print(f"baseline: greenws from {tree} ({out.stdout.strip()})", flush=True)
    return overlay


def _speedups(package: str) -> List[str]:
    return glob.glob(os.path.join(package, "_speedups*.so"))


def _build_speedups(tree: str, package: str, overlay: str) -> None:
    """Give the copy the C speedups: ours when the C source is the same,
    else built from ``tree``'s setup.py (into the copy, not the tree)."""
    ours = os.path.join(REPO, "greenws", "_speedups.c")
    theirs = os.path.join(package, "_speedups.c")
    built = _speedups(os.path.join(REPO, "greenws"))
    if built and os.path.isfile(theirs) and filecmp.cmp(ours, theirs, shallow=False):
        shutil.copy(built[0], package)
        return
    with tempfile.TemporaryDirectory() as temp:
        subprocess.run(
            [sys.executable, "setup.py", "-q", "build_ext",
             "--build-lib", overlay, "--build-temp", temp],
            cwd=tree, capture_output=True, timeout=300,
        )


def environ(overlay: Optional[str]) -> Dict[str, str]:
    """The environment of a process that measures greenws: ``import
    greenws`` from ``overlay`` when given, else from this tree."""
    env = dict(os.environ)
    paths = [REPO, env.get("PYTHONPATH", "")]
    if overlay is not None:
        paths.insert(0, overlay)
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    return env


def with_baselines(specs: List[ServerSpec], overlay: str) -> List[ServerSpec]:
    """``specs`` with each greenws server followed by its baseline twin."""
    out = []
    for spec in specs:
        out.append(spec)
        if spec.lib == "greenws":
            out.append(dataclasses.replace(
                spec, name=spec.name + SUFFIX, lib=spec.lib + SUFFIX,
                pythonpath=overlay,
            ))
    return out


def measure_client(kind: str, name: str, port: int, seconds: float,
                   overlay: Optional[str]) -> float:
    """One repetition of a greenws client workload in a process of its own
    (this tree's greenws, or ``overlay``'s), so that new and base run alike."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.clientrun", kind, name, str(port),
         str(seconds)],
        cwd=overlay or REPO, env=environ(overlay), capture_output=True, text=True,
        timeout=120 + seconds,
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip()[-600:])
    return float(out.stdout.strip().splitlines()[-1])
