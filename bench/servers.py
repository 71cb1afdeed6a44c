"""The servers under test: how to start each one, find its process, read /proc.

Every server is a subprocess listening on a free port of 127.0.0.1.  For
gunicorn the process that holds the connections is the (single) worker, not
the arbiter, so memory and CPU are read from the arbiter's child.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import List, Optional, Tuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ServerSpec:
    """One server: ``lib`` is the WebSocket library, ``runtime`` what runs it."""

    name: str
    lib: str
    runtime: str
    host: str
    #: Whether it can be asked to negotiate permessage-deflate.
    deflate: bool = True
    #: Whether the 1 MiB workload runs on it.
    mib: bool = True
    #: Whether it serves wss:// (a certificate of its own; only the
    #: many-connections-over-TLS workload runs on it).
    tls: bool = False
    #: Put first on its PYTHONPATH (a ``--baseline`` greenws, bench.baseline).
    pythonpath: str = ""

    @property
    def server(self) -> str:
        """The server's name without a ``@base`` suffix: what to start."""
        return self.name.partition("@")[0]


#: The library name of the references: what any library could reach at best.
RAW = "raw"
#: The reference for hosts without a raw WebSocket echo of their own.
PHYSICAL = "raw-tcp"

SERVERS: List[ServerSpec] = [
    ServerSpec(PHYSICAL, RAW, "threads", "socket + threads", deflate=False),
    ServerSpec("greenws-werkzeug", "greenws", "threads", "werkzeug threaded"),
    ServerSpec("simple-werkzeug", "simple-websocket", "threads", "werkzeug threaded"),
    ServerSpec(
        "websockets-sync", "websockets", "threads", "websockets.sync", deflate=False
    ),
    ServerSpec("greenws-gevent", "greenws", "gevent", "gunicorn -k gevent"),
    ServerSpec("simple-gevent", "simple-websocket", "gevent", "gunicorn -k gevent"),
    ServerSpec("greenws-pywsgi", "greenws", "gevent", "gevent.pywsgi"),
    ServerSpec(
        "geventws-pywsgi", "gevent-websocket", "gevent", "gevent.pywsgi", deflate=False
    ),
    ServerSpec("greenws-eventlet", "greenws", "eventlet", "eventlet.wsgi"),
    ServerSpec("simple-eventlet", "simple-websocket", "eventlet", "eventlet.wsgi"),
    ServerSpec(
        "eventletws-eventlet", "eventlet.websocket", "eventlet", "eventlet.wsgi"
    ),
    # asyncio (bench.aioapps): AioServer on a plain asyncio server and under
    # aiohttp, against websockets' and aiohttp's own servers and
    # simple-websocket's AioServer.
    ServerSpec("greenws-aio", "greenws", "asyncio", "asyncio sock"),
    ServerSpec("greenws-aiohttp", "greenws", "asyncio", "aiohttp"),
    ServerSpec(
        "websockets-aio", "websockets.asyncio", "asyncio", "websockets.asyncio",
        deflate=False,
    ),
    ServerSpec("aiohttp-ws", "aiohttp", "asyncio", "aiohttp"),
    # (its 1 MiB echo does not finish within the bench's timeouts)
    ServerSpec(
        "simple-aiohttp", "simple-websocket.aio", "asyncio", "aiohttp", mib=False
    ),
    # The least a WebSocket echo costs on each host (bench.apps.raw_app).
    # Its Python unmasking makes it no reference for 1 MiB: raw-tcp is that.
    ServerSpec("raw-werkzeug", RAW, "threads", "werkzeug threaded", False, False),
    ServerSpec("raw-gevent", RAW, "gevent", "gunicorn -k gevent", False, False),
    ServerSpec("raw-pywsgi", RAW, "gevent", "gevent.pywsgi", False, False),
    ServerSpec("raw-eventlet", RAW, "eventlet", "eventlet.wsgi", False, False),
    # wss:// (many-<N>-tls): gunicorn's --certfile, pywsgi's certfile=.
    ServerSpec("greenws-gevent-tls", "greenws", "gevent", "gunicorn -k gevent TLS",
               deflate=False, mib=False, tls=True),
    ServerSpec("geventws-pywsgi-tls", "gevent-websocket", "gevent",
               "gevent.pywsgi TLS", deflate=False, mib=False, tls=True),
    ServerSpec("raw-gevent-tls", RAW, "gevent", "gunicorn -k gevent TLS",
               deflate=False, mib=False, tls=True),
]

BY_NAME = {s.name: s for s in SERVERS}

_GUNICORN_APPS = {
    "greenws-gevent": "bench.apps:greenws_app",
    "simple-gevent": "bench.apps:simple_app",
    "raw-gevent": "bench.apps:raw_app",
    "greenws-gevent-tls": "bench.apps:greenws_app",
    "raw-gevent-tls": "bench.apps:raw_app",
    # bench.fanout's server (not in SERVERS: it runs only the fan-out rows)
    "greenws-fanout": "bench.fanoutapp:app",
    "greenws-fanout-tls": "bench.fanoutapp:app",
    "socketio-fanout": "bench.fanoutapp:sio_app",
}
#: Environment variables naming the certificate and key of a TLS server.
CERT_ENV, KEY_ENV = "GREENWS_BENCH_CERT", "GREENWS_BENCH_KEY"
_cert_files: Optional[Tuple[str, str]] = None


def cert_files() -> Tuple[str, str]:
    """A certificate for 127.0.0.1 and its key, as files (made once per run)."""
    global _cert_files
    if _cert_files is None:
        import trustme

        folder = tempfile.mkdtemp(prefix="greenws-bench-")
        cert = trustme.CA().issue_cert("127.0.0.1", "localhost")
        paths = (os.path.join(folder, "cert.pem"), os.path.join(folder, "key.pem"))
        cert.cert_chain_pems[0].write_to_path(paths[0])
        cert.private_key_pem.write_to_path(paths[1])
        _cert_files = paths
    return _cert_files

#: The fan-out server (bench.fanout).
FANOUT = ServerSpec("greenws-fanout", "greenws", "gevent", "gunicorn -k gevent")
#: The same over TLS (gunicorn --certfile).
FANOUT_TLS = ServerSpec("greenws-fanout-tls", "greenws", "gevent",
                        "gunicorn -k gevent TLS", tls=True)
#: python-socketio's emit(to=room) in gevent mode, the fan-out's peer.
SIO_FANOUT = ServerSpec(
    "socketio-fanout", "python-socketio", "gevent", "gunicorn -k gevent"
)


def free_port() -> int:
    """A port nobody listens on right now (bind to 0, read it, release it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def command(name: str, port: int, tls_on: bool = False) -> List[str]:
    """The command line that starts server ``name`` on ``port`` (``tls_on``:
    over TLS)."""
    if name in _GUNICORN_APPS:
        tls = []
        if tls_on:
            cert, key = cert_files()
            tls = ["--certfile", cert, "--keyfile", key]
        return [
            sys.executable, "-m", "gunicorn",
            "-k", "gevent", "-w", "1",
            "--worker-connections", "20000",
            "--backlog", "4096",
            "--timeout", "300",
            "--graceful-timeout", "1",
            "--log-level", "error",
            "-b", f"127.0.0.1:{port}",
            *tls,
            _GUNICORN_APPS[name],
        ]
    return [sys.executable, "-m", "bench.serve", name, str(port)]


class Running:
    """A started server; use as a context manager so it is always killed."""

    def __init__(self, spec: ServerSpec, env: Optional[dict] = None):
        self.spec = spec
        self.port = free_port()
        full_env = dict(os.environ)
        paths = [spec.pythonpath, REPO, full_env.get("PYTHONPATH", "")]
        full_env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
        full_env.setdefault("PYTHONWARNINGS", "ignore")
        if spec.tls:
            full_env[CERT_ENV], full_env[KEY_ENV] = cert_files()
        full_env.update(env or {})
        # stderr goes to a file, not a pipe: a chatty server must never block.
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            command(spec.server, self.port, spec.tls),
            # (the directory of a --baseline greenws: the working directory
            # comes first on sys.path)
            cwd=spec.pythonpath or REPO,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=self.log,
            start_new_session=True,
        )
        self.pid = self.proc.pid

    def __enter__(self) -> Running:
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until the port accepts connections (and a gunicorn worker runs)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.spec.name} exited with {self.proc.returncode}: "
                    f"{self.stderr_tail()}"
                )
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            except OSError:
                time.sleep(0.05)
                continue
            if self.spec.server in _GUNICORN_APPS:
                worker = self._child()
                if worker is None:
                    time.sleep(0.05)
                    continue
                self.pid = worker
            return
        raise RuntimeError(f"{self.spec.name} did not start within {timeout} s")

    def _child(self) -> Optional[int]:
        path = f"/proc/{self.proc.pid}/task/{self.proc.pid}/children"
        try:
            with open(path) as f:
                kids = f.read().split()
        except OSError:
            return None
        return int(kids[0]) if kids else None

    def rss(self) -> int:
        """Resident memory of the serving process, in bytes."""
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def cpu(self) -> float:
        """User + system CPU seconds of the serving process."""
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stderr_tail(self, size: int = 2000) -> str:
        """The last ``size`` bytes the server wrote to stdout/stderr."""
        try:
            self.log.seek(0, os.SEEK_END)
            end = self.log.tell()
            self.log.seek(max(0, end - size))
            return self.log.read().decode(errors="replace")
        except (OSError, ValueError):
            return ""

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the server's whole process group; SIGKILL if it lingers."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(5)
        # The group may still hold a gunicorn worker after the arbiter died.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
