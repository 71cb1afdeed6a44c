"""``python -m bench``: run the benchmark suite and print ratios (see README).

Sections, in order:

1. servers, one connection, driven by the raw client: ``rt/<server>`` (32-byte
   round trips/s) and ``mib/<server>`` (1 MiB echo throughput); the asyncio
   ones (``greenws-aio``, ``greenws-aiohttp``, ``websockets-aio``,
   ``aiohttp-ws``, ``simple-aiohttp``) are compared among themselves;
2. servers under gevent, eventlet and asyncio with many idle connections:
   ``many-<N>/<server>``, ``many-<N>-deflate/<server>`` and, over wss://,
   ``many-<N>-tls/<server>`` (the ``*-tls`` servers: gunicorn's --certfile,
   pywsgi's certfile);
3. client libraries against one fixed server, the fastest of section 1
   (greenws under gunicorn's gevent worker), so that the server is not what
   limits them: ``client-rt/<client>``, ``client-mib/<client>`` and
   ``client-connect/<client>`` (connect+close cycles/s), with the raw client
   of section 1 as the reference for what that server allows;
4. fan-out (bench.fanout): one message to ``fanout-<N>[-deflate]`` members
   in one gevent worker with ``greenws-rooms``/``greenws-broadcast`` against
   a ``ws.send-loop`` and ``python-socketio``'s emit(to=room); across two
   processes through Redis,
   ``fanout-redis-<M>x2`` and ``redis-room-100x2``.

Where a target applies, the ratio line also gives its ceiling: the raw
reference's own ratio to the same peer.  For a server that is the raw
WebSocket echo on the peer's host (``raw-gevent``, ``raw-pywsgi``,
``raw-eventlet``: what that host costs with no library in the way) or else
the raw TCP echo; for a client, the raw client.  A target above its ceiling
cannot be met by any library on that host.  A memory target likewise shows
the floor the raw echo sets on the same host.

``--baseline PATH`` also measures every greenws server and client with the
``greenws`` package of the source tree PATH (ids ``<id>@base``, interleaved
with this tree's) and reports new / base per row: a before/after comparison
in one run (see bench/baseline.py).

``--only REGEX`` keeps the measurements whose id matches (``re.search``),
e.g. ``--only 'rt/(greenws|simple)-werkzeug'`` or ``--only gevent``.
Repetitions are interleaved across servers so that a noisy moment on the
shared machine does not hit one server only; each many-connections
repetition uses a freshly started server so that memory is measured from
the same starting point.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import sys
import time
import traceback
from typing import List

from . import baseline, fanout, report, workloads
from .apps import raise_nofile
from .servers import (
    BY_NAME,
    FANOUT,
    SERVERS,
    SIO_FANOUT,
    Running,
    ServerSpec,
)

# websockets' sync server, the fastest third-party one, caps every client at
# about 600 MiB/s, which hid the differences between the clients.
CLIENT_SERVER = "greenws-gevent"
RESULTS_MD = "bench/RESULTS.md"
#: The client section's workloads: kind -> (metric, function).
CLIENT_KINDS = workloads.CLIENT_KINDS


def parse_args(argv: List[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="tiny N, few and short repetitions (< 60 s)")
    p.add_argument("--only", default="", help="regex on measurement ids")
    p.add_argument("--baseline", default=None, metavar="PATH",
                   help="also measure greenws's rows with the greenws package "
                        "of source tree PATH (ids <id>@base) and report new/base")
    p.add_argument("--n", default=None,
                   help="connection counts for the many-connections workloads "
                        "(default 1000,10000; 100 with --quick)")
    p.add_argument("--reps", type=int, default=None,
                   help="repetitions of single-connection workloads (default 5)")
    p.add_argument("--many-reps", type=int, default=None,
                   help="repetitions of many-connections workloads (default 3, "
                        "2 for N >= 5000 to keep the full run short)")
    p.add_argument("--seconds", type=float, default=None,
                   help="duration of one single-connection repetition (default 1.0)")
    p.add_argument("--results", default=None,
                   help=f"write the Markdown report here (default {RESULTS_MD} "
                        "for a full run, none with --quick or --only)")
    args = p.parse_args(argv)
    quick = args.quick
    args.n_list = [int(x) for x in (args.n or ("100" if quick else "1000,10000"))
                   .split(",") if x.strip()]
    args.reps = args.reps or (2 if quick else 5)
    args.many_reps_given = args.many_reps is not None
    args.many_reps = args.many_reps or (1 if quick else 3)
    args.seconds = args.seconds or (0.3 if quick else 1.0)
    if args.results is None and not quick and not args.only:
        args.results = RESULTS_MD
    return args


class Suite:
    """Runs the selected measurements and records them in a Results."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.only = re.compile(args.only) if args.only else None
        self.results = report.Results()
        # --baseline: where the baseline's greenws is imported from.
        self.overlay = baseline.prepare(args.baseline) if args.baseline else None
        self.servers = (SERVERS if self.overlay is None
                        else baseline.with_baselines(SERVERS, self.overlay))

    def wanted(self, wid: str) -> bool:
        return self.only is None or bool(self.only.search(wid))

    def _record_error(self, wid: str, spec: ServerSpec, metric: str,
                      exc: BaseException, server: Running = None) -> None:
        workload, name = wid.split("/", 1)
        text = f"{type(exc).__name__}: {exc}"
        self.results.add(workload, name, spec.lib, spec.runtime, metric, error=text)
        detail = ""
        if server is not None:
            tail = server.stderr_tail(600).strip()
            if tail:
                detail = f" — server output: {tail[-600:]!r}"
        self.results.fail(f"{wid}: {text}{detail}")

    # -- section 1 ----------------------------------------------------------

    def single(self) -> None:
        jobs = [(kind, spec) for kind in ("rt", "mib") for spec in self.servers
                if (spec.mib or kind != "mib") and not spec.tls
                and self.wanted(f"{kind}/{spec.name}")]
        if not jobs:
            return
        print("\n== servers, one connection (raw client) ==", flush=True)
        specs = [s for s in self.servers if any(s is j[1] for j in jobs)]
        with contextlib.ExitStack() as stack:
            running = {}
            for spec in specs:
                try:
                    running[spec.name] = stack.enter_context(Running(spec))
                except Exception as exc:  # noqa: BLE001
                    self.results.fail(f"starting {spec.name}: {exc}")
            for kind in ("rt", "mib"):
                for rep in range(self.args.reps):
                    for k, spec in jobs:
                        if k != kind or spec.name not in running:
                            continue
                        self._one(kind, spec, running[spec.name], rep)

    def _one(self, kind: str, spec: ServerSpec, server: Running, rep: int) -> None:
        wid = f"{kind}/{spec.name}"
        metric = "rt_per_s" if kind == "rt" else "mib_per_s"
        if self.results.rows.get((kind, spec.name, metric), None) and \
                self.results.rows[(kind, spec.name, metric)].error:
            return  # failed before: do not hammer a broken server
        fn = workloads.round_trips if kind == "rt" else workloads.throughput
        try:
            value = fn(server, self.args.seconds)
        except Exception as exc:  # noqa: BLE001
            self._record_error(wid, spec, metric, exc, server)
            return
        self.results.add(kind, spec.name, spec.lib, spec.runtime, metric, value)
        unit = report.METRICS[metric][0]
        print(f"  {wid:<28} rep {rep + 1}: {value:>10,.1f} {unit}", flush=True)

    # -- section 2 ----------------------------------------------------------

    def many(self) -> None:
        header = False
        for n in self.args.n_list:
            for deflate, tls in ((False, False), (True, False), (False, True)):
                workload = f"many-{n}" + ("-deflate" if deflate else "") + (
                    "-tls" if tls else "")
                specs = [s for s in self.servers
                         if s.runtime in ("gevent", "eventlet", "asyncio")
                         and (s.deflate or not deflate) and s.tls == tls
                         and self.wanted(f"{workload}/{s.name}")]
                if not specs:
                    continue
                if not header:
                    print("\n== servers, many idle connections ==", flush=True)
                    header = True
                reps = self.args.many_reps
                if n >= 5000 and not self.args.many_reps_given:
                    reps = min(reps, 2)
                for rep in range(reps):
                    for spec in specs:
                        self._many_one(workload, spec, n, deflate, rep)

    def _many_one(self, workload: str, spec: ServerSpec, n: int, deflate: bool,
                  rep: int) -> None:
        wid = f"{workload}/{spec.name}"
        row = self.results.rows.get((workload, spec.name, "burst_s"))
        if row is not None and row.error:
            return
        timeout = 60 + n * 0.02
        server = None
        try:
            with Running(spec) as server:
                got = workloads.many(server, n, deflate, timeout)
        except Exception as exc:  # noqa: BLE001
            for metric in ("kib_per_conn", "burst_s"):
                self.results.add(workload, spec.name, spec.lib, spec.runtime, metric,
                                 error=f"{type(exc).__name__}: {exc}")
            self._record_error(wid, spec, "burst_s", exc, server)
            return
        note = ""
        if deflate and got["deflate_negotiated"] < 1:
            note = "deflate NOT negotiated"
        for metric in ("kib_per_conn", "kib_per_conn_after_echo", "cpu_ms_per_conn",
                       "connect_s", "burst_s"):
            self.results.add(workload, spec.name, spec.lib, spec.runtime, metric,
                             got[metric], note=note)
        print(f"  {wid:<34} rep {rep + 1}: {got['kib_per_conn']:7.1f} KiB/conn "
              f"({got['kib_per_conn_after_echo']:.1f} after echo), "
              f"{got['cpu_ms_per_conn']:.2f} CPU ms/conn, connect "
              f"{got['connect_s']:.2f} s, burst {got['burst_s']:.3f} s {note}",
              flush=True)

    # -- section 3 ----------------------------------------------------------

    def clients(self) -> None:
        names = list(workloads.CLIENTS)
        if self.overlay is not None:
            for name in baseline.GREENWS_CLIENTS:
                names.insert(names.index(name) + 1, name + baseline.SUFFIX)
        jobs = [(kind, name) for kind in CLIENT_KINDS
                for name in names if self.wanted(f"{kind}/{name}")]
        if not jobs:
            return
        spec = BY_NAME[CLIENT_SERVER]
        print(f"\n== clients, against {spec.name} ==", flush=True)
        with Running(spec) as server:
            for kind in CLIENT_KINDS:
                for rep in range(self.args.reps):
                    for k, name in jobs:
                        if k == kind:
                            self._client_one(kind, name, server, rep)

    def _client_one(self, kind: str, name: str, server: Running, rep: int) -> None:
        wid = f"{kind}/{name}"
        metric, fn = CLIENT_KINDS[kind]
        row = self.results.rows.get((kind, name, metric))
        if row is not None and row.error:
            return
        # A client is its own library; the raw client is the reference.
        lib = report.REFERENCE if name == workloads.RAW_CLIENT else name
        client = name.partition("@")[0]
        runtime = "asyncio" if client in workloads.AIO_CLIENTS else "threads"
        try:
            if self.overlay is not None and client in baseline.GREENWS_CLIENTS:
                # New and base alike, each in a process of its own.
                value = baseline.measure_client(
                    kind, client, server.port, self.args.seconds,
                    self.overlay if client != name else None,
                )
            else:
                value = fn(name, server.port, self.args.seconds)
        except Exception as exc:  # noqa: BLE001
            self.results.add(kind, name, lib, runtime, metric,
                             error=f"{type(exc).__name__}: {exc}")
            self.results.fail(f"{wid}: {type(exc).__name__}: {exc}")
            traceback.print_exc()
            return
        self.results.add(kind, name, lib, runtime, metric, value)
        unit = report.METRICS[metric][0]
        print(f"  {wid:<34} rep {rep + 1}: {value:>10,.1f} {unit}", flush=True)


    # -- section 4 ----------------------------------------------------------

    def fanout(self) -> None:
        quick = self.args.quick
        n = 100 if quick else 5000
        per_process = 50 if quick else 1000
        reps = 2 if quick else 5
        timeout = 60.0
        names = {"floor": ("send() floor", report.REFERENCE),
                 "rooms": ("greenws-rooms", "greenws"),
                 "broadcast": ("greenws-broadcast", "greenws"),
                 "loop": ("ws.send-loop", "ws.send loop")}
        header = False
        for deflate, large, tls in ((False, False, False), (True, False, False),
                                    (True, True, False), (True, False, True)):
            workload = (f"fanout-{n}" + ("-deflate" if deflate else "")
                        + ("-large" if large else "") + ("-tls" if tls else ""))
            modes = [m for m, (name, _) in names.items()
                     if self.wanted(f"{workload}/{name}")]
            if not modes:
                continue
            if not header:
                print("\n== fan-out (gunicorn -k gevent) ==", flush=True)
                header = True
            try:
                runs = fanout.local(n, deflate, reps, timeout, large, tls)
                for rep, got in enumerate(runs):
                    for mode in modes:
                        name, lib = names[mode]
                        self.results.add(workload, name, lib, "gevent", "fanout_s",
                                         got[f"{mode}_s"])
                        self.results.add(workload, name, lib, "gevent",
                                         "fanout_cpu_ms", got[f"{mode}_cpu_ms"])
                        print(f"  {workload}/{name:<20} rep {rep + 1}: "
                              f"{got[f'{mode}_s'] * 1000:8.1f} ms to the last, "
                              f"{got[f'{mode}_cpu_ms']:7.1f} CPU ms", flush=True)
            except Exception as exc:  # noqa: BLE001
                self._record_error(f"{workload}/greenws-rooms", FANOUT, "fanout_s", exc)
            if tls or not self.wanted(f"{workload}/python-socketio"):
                continue
            try:
                for rep, got in enumerate(
                    fanout.socketio(n, deflate, reps, timeout, large)
                ):
                    note = "" if got["deflate"] == 1 or not deflate else (
                        "deflate NOT negotiated")
                    for metric, key in (("fanout_s", "emit_s"),
                                        ("fanout_cpu_ms", "emit_cpu_ms")):
                        self.results.add(workload, "python-socketio",
                                         "python-socketio", "gevent", metric,
                                         got[key], note=note)
                    print(f"  {workload}/python-socketio     rep {rep + 1}: "
                          f"{got['emit_s'] * 1000:8.1f} ms to the last, "
                          f"{got['emit_cpu_ms']:7.1f} CPU ms {note}", flush=True)
            except Exception as exc:  # noqa: BLE001
                self._record_error(f"{workload}/python-socketio", SIO_FANOUT,
                                   "fanout_s", exc)
        workload = f"fanout-redis-{per_process}x2"
        if self.wanted(f"{workload}/greenws-rooms-redis"):
            try:
                for rep, got in enumerate(fanout.redis(per_process, reps, timeout)):
                    self.results.add(workload, "greenws-rooms-redis", "greenws",
                                     "gevent", "fanout_s", got["redis_s"])
                    self.results.add(workload, "local fan-out", "local fan-out",
                                     "gevent", "fanout_s", got["local_s"])
                    print(f"  {workload} rep {rep + 1}: "
                          f"{got['redis_s'] * 1000:.1f} ms to the last of both, "
                          f"{got['local_s'] * 1000:.1f} ms locally", flush=True)
            except Exception as exc:  # noqa: BLE001
                self._record_error(f"{workload}/greenws-rooms-redis", FANOUT,
                                   "fanout_s", exc)
        workload = "redis-room-100x2"
        if self.wanted(f"{workload}/greenws-rooms-redis"):
            burst = 200 if quick else 2000
            try:
                for rep, got in enumerate(fanout.redis(100, reps, timeout, burst)):
                    self.results.add(workload, "greenws-rooms-redis", "greenws",
                                     "gevent", "msgs_per_s", got["msgs_per_s"])
                    print(f"  {workload} rep {rep + 1}: "
                          f"{got['msgs_per_s']:,.0f} messages/s", flush=True)
            except Exception as exc:  # noqa: BLE001
                self._record_error(f"{workload}/greenws-rooms-redis", FANOUT,
                                   "msgs_per_s", exc)


def main(argv: List[str] = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    raise_nofile()
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    t0 = time.monotonic()
    suite = Suite(args)
    print(f"greenws bench: n={args.n_list} reps={args.reps} "
          f"many-reps={args.many_reps} seconds={args.seconds}"
          + (f" only={args.only!r}" if args.only else ""), flush=True)
    suite.single()
    suite.many()
    suite.clients()
    suite.fanout()
    results = suite.results
    print("\n== results (medians) ==")
    print("\n".join(report.table(results)))
    print("\n== ratios: greenws / peer ==")
    lines = report.ratios(results)
    print("\n".join(lines) if lines else "(no greenws/peer pair selected)")
    if suite.overlay is not None:
        print("\n== new / base (--baseline) ==")
        print("\n".join(report.baseline_ratios(results)) or "(no greenws row selected)")
    if results.failures:
        print("\n== failures ==")
        print("\n".join(results.failures))
    elapsed = time.monotonic() - t0
    if args.results:
        settings = "python -m bench " + " ".join(sys.argv[1:] if argv is None else argv)
        report.write_markdown(args.results, results, settings.strip(), started,
                              elapsed)
        print(f"\nwrote {args.results}")
    print(f"done in {elapsed:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
