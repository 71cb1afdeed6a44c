"""The command-line client: ``python -m greenws URL`` (or ``greenws URL``).

Each line read from standard input is sent as a text message; each message
received is printed on its own line of standard output (binary ones as
their ``repr``); what happens to the connection (connected, closed and the
code) goes to standard error, so that the output holds the messages only.

End of input closes the connection with 1000 and exits 0; before that, the
client waits (at most the close timeout) for the server to answer a ping and
then fall quiet for a quarter of a second, so that its answers to the last
lines are shown even when the input is a pipe.  A close by the
server exits 0 for 1000 and 1001, 1 otherwise.  A server that cannot be
reached or refuses the handshake exits 1 with a one-line reason, bad
arguments exit 2, Ctrl-C closes with 1001 and exits 130.

Standard input and the socket are read at the same time, by two threads:
messages are shown while a line is being typed.
"""

from __future__ import annotations

import argparse
import os
import ssl
import sys
import threading
import time
from typing import Any, Dict, Iterator, Optional, Sequence, Tuple

from . import __version__, presets
from .client import Client
from .errors import ConnectionClosed, ConnectionError

__all__ = ["main"]

#: Close codes after which a close by the server is a success (exit 0).
_OK_CLOSES = (1000, 1001)
#: At the end of input, seconds without a message after which the server is
#: taken to have answered everything (see _Session._drain).
_QUIET = 0.25


def _header(text: str) -> Tuple[str, str]:
    name, colon, value = text.partition(":")
    if not colon or not name.strip():
        raise argparse.ArgumentTypeError(
            f"not a header: {text!r} (expected 'Name: value')"
        )
    return name.strip(), value.strip()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="greenws",
        description="Interactive WebSocket client: each line of input is "
        "sent, each message received printed on its own line.",
        epilog="End of input closes with 1000. Exit status: 0 after a close "
        "with 1000 or 1001, 1 after any other close or when the connection "
        "cannot be opened, 2 for bad arguments.",
    )
    parser.add_argument("url", help="ws:// or wss:// URL")
    parser.add_argument(
        "--header", "-H", action="append", type=_header, default=[],
        metavar="'NAME: VALUE'", help="an extra request header (repeatable)",
    )
    parser.add_argument(
        "--subprotocol", "-s", action="append", default=[], metavar="NAME",
        help="offer this subprotocol (repeatable, in order of preference)",
    )
    parser.add_argument(
        "--insecure", "-k", action="store_true",
        help="wss://: do not check the server's certificate or host name",
    )
    parser.add_argument(
        "--unix-socket", metavar="PATH",
        help="connect through this Unix domain socket (Host from the URL)",
    )
    parser.add_argument(
        "--proxy", metavar="URL",
        help="use this proxy (http://[user:pass@]host:port or socks5://...); "
        "'none' connects directly (default: the environment's, if any)",
    )
    parser.add_argument(
        "--open-timeout", type=float, default=10.0, metavar="SECONDS",
        help="longest wait to connect (default 10)",
    )
    parser.add_argument("--version", action="version", version=__version__)
    return parser


def _options(args: argparse.Namespace) -> Dict[str, Any]:
    """Client.connect's keywords from the command line."""
    options: Dict[str, Any] = {
        "subprotocols": args.subprotocol or None,
        "headers": args.header,
        "preset": presets.THREADING,
        "open_timeout": args.open_timeout,
    }
    if args.insecure:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        options["ssl_context"] = context
    # Only when given: a Client without these keywords still serves the rest.
    if args.unix_socket is not None:
        options["unix_socket"] = args.unix_socket
    if args.proxy is not None:
        options["proxy"] = None if args.proxy.lower() == "none" else args.proxy
    return options


def _reason(exc: ConnectionError) -> str:
    """A refusal or failure in one line, without the exception's prefix."""
    text = " ".join(str(exc).split())
    prefix = f"Connection error: {exc.status_code}"
    if text.startswith(prefix):
        text = text[len(prefix):].strip()
        if text.startswith("(") and text.endswith(")"):
            text = text[1:-1]
    if exc.status_code is not None:
        return f"the server answered HTTP {exc.status_code}" + (
            f" ({text})" if text else ""
        )
    return text or "connection failed"


def _show(stream: Any, text: str) -> None:
    try:
        stream.write(text + "\n")
        stream.flush()
    except (OSError, ValueError):
        pass  # output closed (say, piped into head): nothing to show it on


class _Session:
    """One connection driven by standard input (see the module docstring)."""

    def __init__(self, ws: Client, stdin_fd: int) -> None:
        self.ws = ws
        self.stdin_fd = stdin_fd
        #: Set when either the connection ended or input did.
        self.wake = threading.Event()
        #: Set by each message received (see _drain).
        self.arrived = threading.Event()
        self.input_over = False

    def run(self) -> int:
        receiver = threading.Thread(target=self._receive, name="greenws-receive")
        receiver.start()
        # A daemon: it may stay blocked reading input after the connection
        # ended.  It reads the file descriptor itself, never sys.stdin, whose
        # lock a daemon thread must not hold when the interpreter exits.
        threading.Thread(target=self._send_lines, name="greenws-stdin",
                         daemon=True).start()
        ws = self.ws
        try:
            self.wake.wait()
            if self.input_over:
                self._drain()
                ws.close()
        except KeyboardInterrupt:
            ws.close(1001)
            receiver.join(ws.close_timeout + 1)
            self._closed()
            return 130
        receiver.join()
        self._closed()
        # At the end of input our 1000 decides, unless the server's close
        # came first.
        return 0 if ws.close_reason in _OK_CLOSES else 1

    def _drain(self) -> None:
        """Before closing at the end of input, let the server's answers to
        the last lines come (once our Close is out, what arrives is dropped):
        wait for the pong to a ping, then until no message has come for
        :data:`_QUIET` seconds -- a server may answer pings before it is
        done with the messages sent before them -- at most close_timeout."""
        ws = self.ws
        deadline = time.monotonic() + ws.close_timeout
        try:
            ws.ping(timeout=ws.close_timeout)
        except (ConnectionClosed, TimeoutError):
            return
        arrived = self.arrived
        while ws.connected:
            arrived.clear()
            left = deadline - time.monotonic()
            if left <= 0 or not arrived.wait(min(_QUIET, left)):
                return

    def _closed(self) -> None:
        ws = self.ws
        message = f" {ws.close_message}" if ws.close_message else ""
        _show(sys.stderr, f"* closed: {ws.close_reason}{message}")

    def _receive(self) -> None:
        try:
            while True:
                message = self.ws.receive()
                if not isinstance(message, str):
                    message = repr(message)
                _show(sys.stdout, message)
                self.arrived.set()
        except ConnectionClosed:
            pass
        finally:
            self.wake.set()

    def _send_lines(self) -> None:
        for line in _lines(self.stdin_fd):
            try:
                self.ws.send(line)
            except ConnectionClosed:
                return
        self.input_over = True
        self.wake.set()


def _lines(fd: int) -> Iterator[str]:
    """The lines of ``fd`` as text, without their line ends, until EOF."""
    pending = b""
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:
            data = b""
        if not data:
            break
        pending += data
        *lines, pending = pending.split(b"\n")
        for line in lines:
            yield line.rstrip(b"\r").decode("utf-8", "replace")
    if pending:
        yield pending.rstrip(b"\r").decode("utf-8", "replace")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command-line client; return the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    options = _options(args)
    try:
        ws = Client.connect(args.url, **options)
    except KeyboardInterrupt:
        return 130
    except ConnectionError as exc:
        _show(sys.stderr, f"greenws: cannot connect to {args.url}: {_reason(exc)}")
        return 1
    except ValueError as exc:
        _show(sys.stderr, f"greenws: {exc}")
        return 2
    except TypeError as exc:
        given = [name for name in ("unix_socket", "proxy") if name in options]
        if not given or not any(name in str(exc) for name in given):
            raise
        _show(sys.stderr, f"greenws: this version of greenws has no {given[0]}= yet")
        return 2
    extra = f" (subprotocol {ws.subprotocol})" if ws.subprotocol else ""
    _show(sys.stderr, f"* connected to {args.url}{extra}")
    return _Session(ws, sys.stdin.fileno()).run()
