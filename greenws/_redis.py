"""The link of a :class:`greenws.Rooms` to Redis: publish, and one pub/sub
subscription per process.

A minimal RESP2 client of greenws's own rather than redis-py: it opens its
sockets with the preset's ``create_connection`` and waits in the preset's
threads or greenlets, so that under gevent or eventlet -- monkey-patched or
not -- no call ever blocks the hub (redis-py's sockets are the standard
library's, and only cooperate where ``socket`` is patched), and its timeouts
and health checks are exactly the ones :class:`~greenws.Rooms` promises.  It
speaks only what the link needs: AUTH, SELECT-free PUBLISH, SUBSCRIBE and PING.

Faults.  The subscriber reads with a timeout of ``health_check_interval``;
a silent interval sends a PING, and a second silent one declares the link
dead (a Redis that accepts TCP and never answers, a frozen one, a half-open
connection): so a dead link is noticed within two intervals.  It then
reconnects with capped exponential backoff and jitter, and resubscribes.
While it is down, ``connected`` is False and :meth:`RedisLink.publish` raises
:class:`~greenws.rooms.BroadcastError` at once; a publish never waits more
than ``timeout``.  Messages published while a process was not subscribed do
not reach it (Redis pub/sub keeps nothing); a process is never left deaf.
"""

from __future__ import annotations

import random
import socket
import time
from typing import Any, Callable, List, Optional, Tuple, Union
from urllib.parse import unquote, urlsplit

from .log import logger

__all__ = ["RedisLink", "parse_url"]

# Reconnection delays: from _MIN_BACKOFF, doubling, at most _MAX_BACKOFF;
# each one scaled by a random factor in [0.5, 1] (jitter).
_MIN_BACKOFF = 0.05
_MAX_BACKOFF = 5.0
_READ = 65536

Reply = Union[bytes, int, List[Any], "RedisReplyError", None]


def _nothing() -> None:
    pass


class RedisReplyError(Exception):
    """An error reply (``-ERR ...``) from Redis."""


class _Silent(Exception):
    """Redis did not answer in time."""


def parse_url(url: str) -> Tuple[str, int, Optional[str], Optional[str]]:
    """``redis://[[user]:password@]host[:port][/db]`` -> (host, port,
    user, password).  The db does not matter: pub/sub channels are shared by
    every db of a server (use ``channel`` to keep apps apart)."""
    parts = urlsplit(url)
    if parts.scheme != "redis":
        raise ValueError(f"only redis:// URLs are supported, not {url!r}")
    if not parts.hostname:
        raise ValueError(f"no host in {url!r}")
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    return parts.hostname, parts.port or 6379, user, password


def command(*args: Union[str, bytes]) -> bytes:
    """One command in RESP."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode("utf-8") if isinstance(arg, str) else arg
        out.append(b"$%d\r\n" % len(data))
        out.append(data)
        out.append(b"\r\n")
    return b"".join(out)


class Parser:
    """Sans-I/O RESP2 reply parser: :meth:`feed` bytes, :meth:`replies` out."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._pos = 0

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def replies(self) -> List[Reply]:
        """Every complete reply fed so far, in order."""
        out = []
        while True:
            self._pos = 0
            try:
                reply = self._parse()
            except IndexError:  # incomplete
                break
            del self._buffer[: self._pos]
            out.append(reply)
        return out

    def _line(self) -> bytes:
        end = self._buffer.find(b"\r\n", self._pos)
        if end < 0:
            raise IndexError
        line = bytes(self._buffer[self._pos : end])
        self._pos = end + 2
        return line

    def _parse(self) -> Reply:
        line = self._line()
        if not line:
            raise ValueError("empty RESP line")
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest
        if kind == b"-":
            return RedisReplyError(rest.decode("utf-8", "replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            if size < 0:
                return None
            end = self._pos + size
            if len(self._buffer) < end + 2:
                raise IndexError
            data = bytes(self._buffer[self._pos : end])
            self._pos = end + 2
            return data
        if kind == b"*":
            count = int(rest)
            if count < 0:
                return None
            return [self._parse() for _ in range(count)]
        raise ValueError(f"not a RESP reply: {line[:40]!r}")


class _Conn:
    """One socket to Redis and its parser (used by one thread at a time)."""

    def __init__(self, sock: Any) -> None:
        self.sock = sock
        self.parser = Parser()
        self.replies: List[Reply] = []

    def read(self, timeout: float) -> Reply:
        """The next reply; _Silent after ``timeout`` s without one."""
        deadline = time.monotonic() + timeout
        while not self.replies:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _Silent
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(_READ)
            except socket.timeout:
                raise _Silent from None
            if not data:
                raise ConnectionResetError("Redis closed the connection")
            self.parser.feed(data)
            self.replies.extend(self.parser.replies())
        reply = self.replies.pop(0)
        if isinstance(reply, RedisReplyError):
            raise reply
        return reply

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except (OSError, ValueError):
            pass
        try:
            self.sock.close()
        except OSError:  # pragma: no cover
            pass


class RedisLink:
    """Publish to, and stay subscribed to, one Redis channel.

    ``on_message(payload)`` is called with every message on the channel, in
    order, from the link's own thread or greenlet (it must not block).
    """

    def __init__(
        self,
        url: str,
        channel: str,
        on_message: Callable[[bytes], None],
        *,
        timeout: float,
        health_check_interval: float,
        preset: Any,
    ) -> None:
        self.host, self.port, self._user, self._password = parse_url(url)
        self.channel = channel.encode("utf-8")
        self._on_message = on_message
        self.timeout = timeout
        self.interval = health_check_interval
        self._preset = preset
        #: True while subscribed (and so while publishing makes sense).
        self.connected = False
        self._closed = False
        self._sub: Optional[_Conn] = None
        self._pub: Optional[_Conn] = None
        self._pub_lock = preset["lock_class"]()
        self._stop = preset["event_class"]()
        # Set once the first attempt to connect is over, either way: a send
        # right after Rooms(url) waits for it (at most ``timeout``).
        self._tried = preset["event_class"]()
        thread = preset["thread_class"](target=self._run)
        try:
            thread.daemon = True
            thread.name = "greenws-redis"
        except (AttributeError, RuntimeError, TypeError):  # pragma: no cover
            pass
        thread.start()
        self._thread = thread

    # -- publishing -----------------------------------------------------------

    def publish(self, payload: bytes, meanwhile: Callable[[], Any] = _nothing) -> None:
        """PUBLISH ``payload``; BroadcastError if Redis does not take it
        within ``timeout`` (at once while the link is known to be down).

        ``meanwhile()`` (this process's own fan-out) runs exactly once, even
        when this raises: as soon as the command is on its way, before the
        wait for Redis's answer, so that the other processes fan the message
        out while this one does; first, if sending must wait (the link down
        or connecting, or another publish waiting for its answer), so that
        the members here never wait for Redis.
        """
        from .rooms import BroadcastError

        ran = False

        def local() -> None:
            nonlocal ran
            if not ran:
                ran = True
                meanwhile()

        deadline = time.monotonic() + self.timeout
        try:
            if not self.connected:
                local()
                self._tried.wait(self.timeout)
                if not self.connected:
                    raise BroadcastError(
                        f"not connected to Redis at {self.host}:{self.port}"
                    )
            lock = self._pub_lock
            if not lock.acquire(False):
                local()
                if not lock.acquire(timeout=max(deadline - time.monotonic(), 0)):
                    raise BroadcastError("timed out waiting for the Redis publisher")
            try:
                conn = self._pub
                if conn is None:
                    local()
                    conn = self._pub = self._open(deadline)
                conn.sock.sendall(command(b"PUBLISH", self.channel, payload))
                local()
                conn.read(deadline - time.monotonic())
            except (OSError, ValueError, RedisReplyError, _Silent) as exc:
                self._close_publisher()
                raise BroadcastError(
                    f"Redis at {self.host}:{self.port} did not take the message: "
                    f"{type(exc).__name__} {exc}".rstrip()
                ) from None
            except BaseException:
                self._close_publisher()  # its answer may still come: unpaired
                raise
            finally:
                lock.release()
        finally:
            local()

    def _close_publisher(self) -> None:
        """Close the publisher's connection (the publish lock held)."""
        if self._pub is not None:
            self._pub.close()
            self._pub = None

    # -- the subscription -------------------------------------------------------

    def _open(self, deadline: float) -> _Conn:
        """A new connection, authenticated; OSError/_Silent past ``deadline``."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _Silent
        sock = self._preset.create_connection((self.host, self.port), timeout=remaining)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:  # pragma: no cover
            pass
        conn = _Conn(sock)
        try:
            if self._password is not None:
                args: Tuple[Union[str, bytes], ...] = (self._password,)
                if self._user:
                    args = (self._user, self._password)
                sock.sendall(command(b"AUTH", *args))
                conn.read(deadline - time.monotonic())
        except BaseException:
            conn.close()
            raise
        return conn

    def _run(self) -> None:
        """Stay subscribed until closed: connect, listen, back off, again."""
        backoff = _MIN_BACKOFF
        while not self._closed:
            conn = None
            try:
                conn = self._open(time.monotonic() + self.timeout)
                conn.sock.sendall(command(b"SUBSCRIBE", self.channel))
                reply = conn.read(self.timeout)
                if not (isinstance(reply, list) and reply[:1] == [b"subscribe"]):
                    raise ValueError(f"unexpected reply to SUBSCRIBE: {reply!r}")
                self._sub = conn
                if self._closed:
                    break
                self.connected = True
                self._tried.set()
                logger.info("greenws.rooms: subscribed to Redis at %s:%s",
                            self.host, self.port)
                backoff = _MIN_BACKOFF
                self._listen(conn)
            except (OSError, ValueError, RedisReplyError, _Silent) as exc:
                if not self._closed:
                    logger.warning(
                        "greenws.rooms: Redis link to %s:%s %s: %s",
                        self.host, self.port,
                        "lost" if self.connected else "failed",
                        "no answer" if isinstance(exc, _Silent) else exc,
                    )
            except Exception:  # noqa: BLE001 - a bug of ours: log it, go on
                logger.exception("greenws.rooms: error in the Redis link")
            finally:
                self.connected = False
                self._sub = None
                if conn is not None:
                    conn.close()
                self._drop_publisher()
            self._tried.set()
            if self._closed:
                break
            self._stop.wait(backoff * random.uniform(0.5, 1.0))
            backoff = min(backoff * 2, _MAX_BACKOFF)

    def _listen(self, conn: _Conn) -> None:
        """Pass messages on until the link fails (raises) or is closed."""
        waiting = False  # a PING went out and nothing came since
        sock = conn.sock
        parser = conn.parser
        replies = conn.replies
        on_message = self._on_message
        sock.settimeout(self.interval)
        while not self._closed:
            try:
                data = sock.recv(_READ)
            except socket.timeout:
                if waiting:
                    raise _Silent from None
                sock.sendall(command(b"PING"))
                waiting = True
                continue
            if not data:
                if self._closed:
                    return
                raise ConnectionResetError("Redis closed the connection")
            waiting = False
            parser.feed(data)
            replies.extend(parser.replies())
            while replies:
                reply = replies.pop(0)
                if (
                    isinstance(reply, list)
                    and len(reply) == 3
                    and reply[0] == b"message"
                    and isinstance(reply[2], bytes)
                ):
                    try:
                        on_message(reply[2])
                    except Exception:  # noqa: BLE001 - a bug of ours
                        logger.exception("greenws.rooms: error passing on a message")
                elif isinstance(reply, RedisReplyError):
                    raise reply

    def _drop_publisher(self) -> None:
        """The publisher's connection may be as dead as the subscriber's."""
        if self._pub_lock.acquire(False):
            try:
                self._close_publisher()
            finally:
                self._pub_lock.release()

    # -- ending -----------------------------------------------------------------

    def close(self) -> None:
        """Unsubscribe and close both connections; the link does not come back."""
        self._closed = True
        self.connected = False
        self._stop.set()
        self._tried.set()
        sub = self._sub
        if sub is not None:
            try:
                sub.sock.shutdown(socket.SHUT_RDWR)
            except (OSError, ValueError):
                pass
        self._drop_publisher()
        join = getattr(self._thread, "join", None)
        if join is not None:
            try:
                join(self.timeout)
            except RuntimeError:  # pragma: no cover - closing from the link itself
                pass

    def forget(self) -> None:
        """In a forked child: the parent's link is not ours to use or close."""
        self._closed = True
        self.connected = False
