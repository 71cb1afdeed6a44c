"""Start real hosting servers as subprocesses on 127.0.0.1 for the tests."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Tuple

APPS = Path(__file__).parent / "apps"
ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

#: Every hosting server the integration tests run on.
KINDS = [
    "werkzeug",
    "gunicorn-sync",
    "gunicorn-gthread",
    "gunicorn-gevent",
    "gunicorn-eventlet",
    "eventlet",
    "eventlet-plain",
    "gevent",
    "gevent-patched",
]


#: The asyncio hosts of tests/apps/aio_app.py (greenws.AioServer).
AIO_KINDS = ["aio-sock", "aiohttp", "uvicorn", "hypercorn"]


def gunicorn_has_worker(name: str) -> bool:
    """gunicorn 27 dropped the eventlet worker; older ones still have it."""
    try:
        from gunicorn.workers import SUPPORTED_WORKERS
    except ImportError:  # pragma: no cover
        return False
    return name in SUPPORTED_WORKERS


#: Lines a hosting server must never print while serving WebSockets.
BAD_LOG = re.compile(
    r"Traceback|Error handling request|Internal Server Error|\" 500 "
    r"|appears to be blocked"
)


def check_log(output: str, what: str, bad_log: re.Pattern[str] = BAD_LOG) -> None:
    """Fail if a server's ``output`` has a line matching ``bad_log``."""
    bad = [line for line in output.splitlines() if bad_log.search(line)]
    assert not bad, f"{what} logged errors:\n{output[-4000:]}"


def gunicorn_options() -> List[str]:
    """Options every test gunicorn gets."""
    try:
        from gunicorn.config import KNOWN_SETTINGS
    except ImportError:  # pragma: no cover
        return []
    names = {setting.name for setting in KNOWN_SETTINGS}
    # gunicorn 27 opens a control socket at one fixed path per user; test
    # servers running side by side must not fight over it.
    return ["--no-control-socket"] if "control_socket_disable" in names else []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)  # polling a port: there is no event to wait on
    raise TimeoutError(f"nothing listening on port {port} after {timeout}s")


def wait_for_unix(path: str, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    """Like :func:`wait_for_port`, for a Unix domain socket."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early with {proc.returncode}")
        with socket.socket(socket.AF_UNIX) as sock:
            try:
                sock.connect(path)
                return
            except OSError:
                pass
        time.sleep(0.05)  # polling a path: there is no event to wait on
    raise TimeoutError(f"nothing listening on {path} after {timeout}s")


class HostedServer:
    """One server process serving ``tests/apps/<module>.py`` (echo_app by default).

    ``options`` are extra gunicorn command-line options; ``unix`` (gunicorn
    kinds only) binds that Unix socket path instead of a port; ``port`` a port
    to listen on (default: a free one), say to restart a server where it was;
    ``tls`` (certificate file, key file) serves wss:// (gunicorn, eventlet
    and gevent kinds).
    """

    def __init__(
        self,
        kind: str,
        env: Optional[dict] = None,
        options: Optional[List[str]] = None,
        module: str = "echo_app",
        unix: Optional[str] = None,
        port: Optional[int] = None,
        tls: Optional[Tuple[str, str]] = None,
    ) -> None:
        self.kind = kind
        self.module = module
        self.unix = unix
        self.options = options or []
        self.port = port or free_port()
        scheme = "s" if tls else ""
        self.url = f"ws{scheme}://127.0.0.1:{self.port}"
        self.http_url = f"http{scheme}://127.0.0.1:{self.port}"
        self._log = tempfile.TemporaryFile()
        full_env = dict(os.environ, PYTHONPATH=str(APPS), PYTHONUNBUFFERED="1")
        if tls:
            if kind.startswith("gunicorn-"):
                self.options += ["--certfile", tls[0], "--keyfile", tls[1]]
            else:
                full_env.update(SERVE_CERTFILE=tls[0], SERVE_KEYFILE=tls[1])
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            self.command(),
            cwd=str(APPS),
            env=full_env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        try:
            if unix is None:
                wait_for_port(self.port, self.proc)
            else:
                wait_for_unix(unix, self.proc)
        except BaseException:
            self.stop()
            raise

    def command(self) -> List[str]:
        if self.kind in AIO_KINDS:
            return self._aio_command()
        if self.kind.startswith("gunicorn-"):
            worker = self.kind.split("-", 1)[1]
            cmd = [
                str(BIN / "gunicorn"),
                "-k",
                worker,
                "-w",
                "1",
                "-b",
                f"unix:{self.unix}" if self.unix else f"127.0.0.1:{self.port}",
                "--timeout",
                "120",
                "--graceful-timeout",
                "2",
                "--log-level",
                "debug",
                *gunicorn_options(),
            ]
            if worker == "gthread":
                cmd += ["--threads", "8"]
            return cmd + self.options + [f"{self.module}:app"]
        serve = str(APPS / "serve.py")
        return [sys.executable, serve, self.kind, str(self.port), self.module]

    def _aio_command(self) -> List[str]:
        port = str(self.port)
        if self.kind == "aiohttp":
            return [sys.executable, "-m", "aiohttp.web", "-H", "127.0.0.1", "-P",
                    port, "aio_app:aiohttp_app"]
        if self.kind == "uvicorn":
            return [sys.executable, "-m", "uvicorn", "aio_app:asgi_app", "--host",
                    "127.0.0.1", "--port", port, "--log-level", "debug"]
        if self.kind == "hypercorn":
            return [sys.executable, "-m", "hypercorn", "aio_app:asgi_app", "--bind",
                    f"127.0.0.1:{port}", "--log-level", "debug"]
        return [sys.executable, str(APPS / "aio_app.py"), port]

    def stop(self) -> str:
        """Stop the server and return everything it printed."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        output = self.output()
        if not self._log.closed:
            # Kept as text: an open log file would be left to the garbage
            # collector (a ResourceWarning in whichever test runs then).
            self._stopped_output = output
            self._log.close()
        return output

    def stop_and_check(self, bad_log: re.Pattern[str] = BAD_LOG) -> str:
        """Stop the server; fail if it logged an error (see :data:`BAD_LOG`)."""
        output = self.stop()
        check_log(output, self.kind, bad_log)
        return output

    def output(self) -> str:
        if self._log.closed:
            return self._stopped_output
        self._log.flush()
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace")

    def wait_for_output(
        self, condition: Callable[[str], bool], timeout: float = 10.0
    ) -> str:
        """Poll the server's output until ``condition(output)``; return it.

        For what a server only tells through its log (there is no event to
        wait on).
        """
        deadline = time.monotonic() + timeout
        while not condition(output := self.output()):
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.kind}: condition not met after {timeout}s:\n"
                    + output[-4000:]
                )
            time.sleep(0.02)
        return output


class Proc:
    """A Python script run as a subprocess (examples, README snippets).

    Its output goes to a file shown on failure.  It runs in its own process
    group, so that :meth:`kill` also reaches the workers it forked.
    """

    def __init__(self, args: List[str], cwd: Path = ROOT) -> None:
        self._log = tempfile.TemporaryFile()
        self.popen = subprocess.Popen(
            [sys.executable, *args], cwd=str(cwd),
            stdout=self._log, stderr=subprocess.STDOUT,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
            start_new_session=True,
        )

    def output(self) -> str:
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace")

    def wait_for_port(self, port: int, timeout: float = 20.0) -> None:
        try:
            wait_for_port(port, self.popen, timeout)
        except (RuntimeError, TimeoutError) as exc:
            raise AssertionError(f"{exc}:\n{self.output()}") from None

    def interrupt(self, timeout: float = 15.0) -> int:
        """Send Ctrl-C (SIGINT) and wait for the exit status."""
        self.popen.send_signal(signal.SIGINT)
        return self.popen.wait(timeout)

    def kill(self) -> None:
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGKILL)
            except ProcessLookupError:  # pragma: no cover - exited meanwhile
                pass
            self.popen.wait(10)
        self._log.close()


@contextmanager
def serving(args: List[str], port: int, cwd: Path = ROOT) -> Iterator[Proc]:
    """Run a server script until the block ends, once ``port`` listens."""
    proc = Proc(args, cwd)
    try:
        proc.wait_for_port(port)
        yield proc
    finally:
        proc.kill()


class ProxyServer:
    """A proxy server process on 127.0.0.1 that needs a username and password.

    :meth:`tinyproxy` starts Debian's tinyproxy (HTTP ``CONNECT``, Basic auth)
    from a config written in ``directory``; :meth:`socks5` starts pproxy as a
    SOCKS5 server.  ``url()`` is the proxy URL, with credentials unless
    ``auth=False``, or with others given.  Stopped by its PID with
    :meth:`stop`.
    """

    USER = "greenws"
    PASSWORD = "s3cret"

    def __init__(self, scheme: str, command: List[str], port: int) -> None:
        self.scheme = scheme
        self.port = port
        self._log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(command, stdout=self._log,
                                     stderr=subprocess.STDOUT)
        try:
            wait_for_port(port, self.proc, timeout=15)
        except BaseException:
            self.stop()
            raise

    @classmethod
    def tinyproxy(cls, executable: str, directory: Path) -> ProxyServer:
        port = free_port()
        config = directory / "tinyproxy.conf"
        config.write_text(
            f"Port {port}\nListen 127.0.0.1\nTimeout 30\nLogLevel Info\n"
            "MaxClients 100\nAllow 127.0.0.1\nDisableViaHeader Yes\n"
            f"BasicAuth {cls.USER} {cls.PASSWORD}\n"
        )
        return cls("http", [executable, "-d", "-c", str(config)], port)

    @classmethod
    def socks5(cls) -> ProxyServer:
        port = free_port()
        # --auth 0: check the credentials of every connection (pproxy would
        # otherwise trust an address that once logged in).
        listen = f"socks5://127.0.0.1:{port}#{cls.USER}:{cls.PASSWORD}"
        return cls("socks5", [sys.executable, "-m", "pproxy", "-l", listen,
                              "--auth", "0"], port)

    def url(self, auth: bool = True, user: str = USER, password: str = PASSWORD,
            scheme: Optional[str] = None) -> str:
        credentials = f"{user}:{password}@" if auth else ""
        return f"{scheme or self.scheme}://{credentials}127.0.0.1:{self.port}"

    def output(self) -> str:
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:  # pragma: no cover
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
