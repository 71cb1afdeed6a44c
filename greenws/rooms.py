"""Rooms and broadcast: one message to many connections, in one process or
in every process sharing a Redis.

::

    rooms = greenws.Rooms()                            # this process only
    rooms = greenws.Rooms("redis://127.0.0.1:6379/0")  # every process on that Redis
    rooms.join(ws, "lobby")
    rooms.send("lobby", "hello")

Encode once.  A message is wrapped in a :class:`~greenws.protocol.Shared`,
whose frame each connection takes from the same cache: built, and compressed,
once per permessage-deflate window (server connections share the bytes;
clients mask each frame but share the compressed payload).

Never wait for a member.  The sender writes to each member only what the
kernel takes at once (:meth:`Base._write_nowait`), under the member's write
lock (taken only if free) and behind its queued pongs, so frames never
interleave.  For an idle server connection that is one ``send()`` of the
shared frame (over TLS, one write of the SSL object, where the descriptor
never blocks: gevent, eventlet), which is most of what a fan-out costs.
What does not fit goes to the member's own queue of pending messages, which
a writer of the member's preset (a thread or greenlet started only while
there is a backlog) drains in order.  A member whose queue holds
``max_pending`` messages cannot keep up: it is closed with 1008 ("too
slow"), leaves every room, and the others go on.  Memory therefore stays
bounded whatever the members do.

Connections that close leave every room by themselves
(:func:`greenws.registry.on_discard`).  Across processes, see
:mod:`greenws._redis`.
"""

from __future__ import annotations

import _socket
import collections
import os
import socket
import ssl
import struct
import threading
import weakref
from typing import Any, Deque, Dict, Iterable, List, Optional, Set, Union

from . import presets as _presets
from . import registry as _registry
from .connection import Base
from .errors import GreenWSError
from .log import logger
from .protocol import Shared

__all__ = ["Rooms", "broadcast", "BroadcastError", "DEFAULT_MAX_PENDING"]

#: Broadcast messages a member may have waiting before it is closed.
DEFAULT_MAX_PENDING = 64
#: Close code and reason of a member that cannot keep up.
TOO_SLOW = 1008
TOO_SLOW_REASON = "too slow"

# Longest a sender waits for the write lock of a member whose queue is full
# but whose socket is not (see _catch_up).
_CATCH_UP = 1.0
# How long the writer of a member without a direct path (see _Member.wake)
# waits for the next message before it ends.
_LINGER = 2.0

try:
    import fcntl
    import termios

    _TIOCOUTQ: Optional[int] = termios.TIOCOUTQ
except (ImportError, AttributeError):  # pragma: no cover - not Linux/Unix
    _TIOCOUTQ = None

_MSG_DONTWAIT = getattr(socket, "MSG_DONTWAIT", None)

# Guards the hand-over of writing between a sender and a member's writer.
# Held for a few assignments only (never across I/O or a switch), so one
# lock serves every member; reentrant for a signal handler's sake.
_lock = threading.RLock()


class BroadcastError(GreenWSError):
    """A message could not be passed on to the other processes (Redis is
    unreachable, or did not answer within ``timeout``).

    The members in this process got it all the same.
    """


class _Member:
    """Broadcast state of one connection (shared by every Rooms object and
    :func:`broadcast`)."""

    __slots__ = ("ws", "pending", "writers", "dead", "raw", "flags", "bits", "wake")

    def __init__(self, ws: Base) -> None:
        self.ws = ws
        # Messages not yet written, oldest first.  Only the holder of the
        # connection's write lock takes them (see take), so they go out in
        # this order whoever writes them.
        self.pending: Deque[Shared] = collections.deque()
        # Writers running (or about to), waiting for the write lock or the
        # socket; one is enough unless a sender hands its lock over.
        self.writers = 0
        # Closed or too slow: nothing more is queued.
        self.dead = False
        self.raw, self.flags = _raw_socket(ws)
        # The window whose shared frame this member takes as it is, or None
        # (it frames each message itself: a client masks each frame, and see
        # Protocol.shared_bits).
        self.bits: Optional[int] = None
        if self.raw is not None and ws._is_server:
            self.bits = ws._protocol.shared_bits()
        # Without a direct path every message needs the writer: it waits
        # for the next one a while (woken by this event) instead of ending,
        # so that a thread is not started per message.
        self.wake: Any = None if self.raw is not None else ws.event_class()

    def end(self) -> int:
        """Queue nothing more, drop what waits (how many), stop the writer."""
        with _lock:
            self.dead = True
            dropped = len(self.pending)
            self.pending.clear()
        if self.wake is not None:
            self.wake.set()
        return dropped

    def take(self) -> List[Shared]:
        """Every pending message (the caller holds the write lock)."""
        with _lock:
            items = list(self.pending)
            self.pending.clear()
        return items


def _raw_socket(ws: Base) -> Any:
    """A stdlib socket on ``ws``'s descriptor whose ``send(data, flags)``
    never blocks, and those flags (for TLS, a :class:`_TLSWriter`); (None, 0)
    when there is none (TLS on a blocking descriptor, or a socket greenws
    does not know): each message then goes through a writer.
    """
    sock = ws.sock
    if getattr(sock, "pending", None) is not None:  # TLS: the SSL object writes
        return _TLSWriter.of(sock), 0
    raw = sock
    if not isinstance(raw, _socket.socket):
        # gevent keeps the real socket in _sock, eventlet in fd.  Their own
        # send() waits for room even with MSG_DONTWAIT, and monkey-patching
        # makes them pass for socket.socket: only the C-level class is sure.
        raw = getattr(sock, "_sock", None)
        if not isinstance(raw, _socket.socket):
            raw = getattr(sock, "fd", None)
            if not isinstance(raw, _socket.socket):
                return None, 0
    timeout = raw.gettimeout()
    if timeout == 0.0:
        return raw, 0
    if timeout is None and _MSG_DONTWAIT is not None:
        return raw, _MSG_DONTWAIT
    return None, 0  # a timeout makes send() wait for room first


class _TLSWriter:
    """``send(data, flags)`` for a TLS connection whose descriptor never
    blocks (gevent's and eventlet's): the SSL object's own write.

    An SSL write takes all of ``data`` or nothing (0 here), and after
    nothing it must be repeated with the same bytes: the whole frame then
    goes to the member's writer, whose ``sendall`` does exactly that.
    """

    __slots__ = ("_sock", "_write")

    def __init__(self, sock: Any, write: Any) -> None:
        self._sock = sock
        self._write = write

    @classmethod
    def of(cls, sock: Any) -> Optional[_TLSWriter]:
        sslobj = getattr(sock, "_sslobj", None)
        write = getattr(sslobj, "write", None)
        try:
            if write is None or os.get_blocking(sock.fileno()):
                return None
        except (OSError, ValueError):
            return None
        return cls(sock, write)

    def send(self, data: bytes, flags: int = 0) -> int:
        try:
            return int(self._write(data))
        except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
            return 0

    def fileno(self) -> int:
        return int(self._sock.fileno())

    def getsockopt(self, *args: Any) -> Any:
        return self._sock.getsockopt(*args)


# Every connection with broadcast state; the state goes when it closes.
_members: Dict[Base, _Member] = {}
# Every Rooms object, so that a closed connection leaves all its rooms.
_instances: weakref.WeakSet[Rooms] = weakref.WeakSet()


def _member(ws: Base) -> Optional[_Member]:
    """``ws``'s state, made on first use; None once it is closed."""
    member = _members.get(ws)
    if member is None:
        if not ws.connected:
            return None
        if not _members:
            # From the first member on (idempotent): programs without rooms
            # pay nothing when a connection closes.
            _registry.on_discard(_forget)
        member = _Member(ws)
        member = _members.setdefault(ws, member)
        if not _registry.is_open(ws):  # closed meanwhile: its hook has run
            _members.pop(ws, None)
            return None
    return member


def _forget(ws: Base) -> None:
    """A connection is over (or too slow): drop its state, leave its rooms."""
    try:
        member = _members.pop(ws, None)
        if member is not None:
            member.end()
        for rooms in list(_instances):
            rooms._drop(ws)
    except Exception:  # noqa: BLE001 - it runs inside the connection's close
        logger.exception("greenws.rooms: error while %r left its rooms", ws)



def _message(data: Any) -> Union[str, bytes]:
    """What ``Base.send`` would send: str as text, bytes-like as binary,
    anything else as ``str(data)``."""
    if isinstance(data, (str, bytes)):
        return data
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    return str(data)


def _deliver(member: _Member, shared: Shared, max_pending: int) -> None:
    """Queue ``shared`` for one member and write what can go at once."""
    with _lock:
        if member.dead:
            return
        full = len(member.pending) >= max_pending
        if not full:
            member.pending.append(shared)
    if not full:
        _pump(member)
    elif not _catch_up(member, shared):
        _too_slow(member)


def _socket_full(raw: Any) -> bool:
    """Whether the kernel's send buffer of ``raw`` is (nearly) full.

    Asked of the kernel directly (Linux): a selector would register the
    descriptor with a hub that may already watch it for a parked writer.
    Elsewhere it is assumed not full (the sender then waits a little).
    """
    if _TIOCOUTQ is None:
        return False
    try:
        queued = struct.unpack("i", fcntl.ioctl(raw.fileno(), _TIOCOUTQ, bytes(4)))[0]
        size = raw.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
    except (OSError, ValueError):
        return True  # closed: gone anyway
    # Linux reports twice the payload it allows (bookkeeping included).
    return bool(queued * 2 > size * 2 // 3)


def _catch_up(member: _Member, shared: Shared) -> bool:
    """The member's queue is full: unless its socket is full too (the peer
    does not read), the writer that holds its write lock is only waiting for
    its turn to run (a GIL, or a hub the sender has not yielded to yet).
    Wait for the lock, a little at most, and write the queue and ``shared``
    now; False if the member really is too slow."""
    ws = member.ws
    if member.raw is None or _socket_full(member.raw):
        return False

    def take() -> List[Shared]:
        with _lock:
            member.pending.append(shared)
        return member.take()

    result = ws._write_nowait(take, member.raw, member.flags, _CATCH_UP)
    if result is None:
        return False
    if result is not True and result is not False:
        _start_writer(member, result)
    return True


def _pump(member: _Member) -> None:
    """Write the member's pending messages if that needs no waiting; else
    leave them to a writer of its own (never waits)."""
    ws = member.ws
    while member.raw is not None:
        try:
            result = ws._write_nowait(member.take, member.raw, member.flags)
        except Exception:  # noqa: BLE001 - a bug of ours
            logger.exception("greenws.rooms: error while writing to %r", ws)
            return
        if result is False:
            return
        if result is None:
            break  # the lock is taken: its holder may not look at the queue
        if result is not True:
            _start_writer(member, result)  # our lock goes with the rest
            return
        with _lock:
            if not member.pending:
                return
        # More came while we held the lock (other threads): write it too.
    with _lock:
        start = not (member.writers or member.dead or not member.pending)
        if start:
            member.writers += 1
    if start:
        _start_writer(member, None, counted=True)
    elif member.wake is not None:
        member.wake.set()  # a writer waiting for the next message takes it


def _start_writer(
    member: _Member, rest: Optional[List[Any]], counted: bool = False
) -> None:
    """Start a writer: with ``rest``, the caller's write lock goes to it."""
    if not counted:
        with _lock:
            member.writers += 1
    try:
        thread = member.ws.thread_class(target=lambda: _write_pending(member, rest))
        try:
            thread.daemon = True
        except (AttributeError, RuntimeError):  # pragma: no cover
            pass
        thread.start()
    except BaseException:
        with _lock:
            member.writers -= 1
        if rest is not None:
            member.ws._write_lock.release()
        raise


def _write_pending(member: _Member, rest: Optional[List[Any]]) -> None:
    """A member's writer: what a sender left, then the queue until empty,
    waiting for the socket as long as it takes (the queue's bound decides
    when the member is too slow); for a member without a direct path, then
    for the next message a while (see :attr:`_Member.wake`)."""
    ws = member.ws
    wake = member.wake
    ok = True
    idle = False  # waited for the next message in vain
    try:
        if rest is not None:
            ok = ws._write_rest(rest)
        while ok:
            if wake is not None:
                wake.clear()  # before looking: a message queued after sets it
            with _lock:
                waiting = not member.pending
                if member.dead or (waiting and (wake is None or idle)):
                    member.writers -= 1
                    return
            if waiting:
                idle = not wake.wait(_LINGER)
                continue
            idle = False
            ok = ws._write_batch(member.take)
    except Exception:  # noqa: BLE001 - a bug of ours, or an interrupted write
        logger.exception("greenws.rooms: error while writing to %r", ws)
    with _lock:
        member.writers -= 1


def _too_slow(member: _Member) -> None:
    """Close a member that cannot keep up (1008) and remove it everywhere."""
    ws = member.ws
    # Kept (dead) until the connection is over, so that nothing more is
    # queued for it meanwhile.
    pending = member.end()
    for rooms in list(_instances):
        rooms._drop(ws)
    logger.info(
        "%s %s: %d broadcast messages pending; closing it (%d %s)",
        type(ws).__name__,
        ws.remote_address,
        pending,
        TOO_SLOW,
        TOO_SLOW_REASON,
    )

    def close() -> None:
        try:
            ws.close(TOO_SLOW, TOO_SLOW_REASON)
        except Exception:  # noqa: BLE001 - never raises for a known code
            logger.exception("greenws.rooms: error while closing %r", ws)

    thread = ws.thread_class(target=close)
    try:
        thread.daemon = True
    except (AttributeError, RuntimeError):  # pragma: no cover
        pass
    thread.start()


def _fan_out(
    connections: Iterable[Base], shared: Shared, max_pending: int
) -> int:
    """Hand ``shared`` to each connection; how many it went to.

    Members that take the shared frame as it is (see :attr:`_Member.bits`)
    get it from one dict lookup per message, not from framing per member,
    so that an idle member costs little more than its ``send()``.
    """
    count = 0
    members = _members
    frames: Dict[int, Any] = {}
    whole = (shared,)
    single = shared.single
    for ws in connections:
        member = members.get(ws) or _member(ws)
        if member is None or member.dead:
            continue
        count += 1
        if member.pending or member.raw is None:
            _deliver(member, shared, max_pending)
            continue
        take: Any = whole
        bits = member.bits
        if bits is not None and single:
            frame = frames.get(bits)
            if frame is None:
                frame = frames[bits] = shared.frame(bits, False)
            if type(frame) is bytes:
                take = frame
        try:
            result = ws._write_nowait(take, member.raw, member.flags)
        except Exception:  # noqa: BLE001 - a bug of ours
            logger.exception("greenws.rooms: error while writing to %r", ws)
            continue
        if result is True:
            if member.pending:  # queued by other threads meanwhile
                _pump(member)
        elif result is None:
            _deliver(member, shared, max_pending)
        elif result is not False:
            _start_writer(member, result)
    return count


def broadcast(
    connections: Iterable[Base], message: Any, *, max_pending: int = DEFAULT_MAX_PENDING
) -> int:
    """Send ``message`` to each of ``connections`` (in this process).

    Framed and compressed once; never waits for a connection (see the
    module's docstring for the slow-member policy, which ``max_pending``
    sets).  Closed connections are skipped.  Returns how many it went to.
    """
    _check_pending(max_pending)
    return _fan_out(list(connections), Shared(_message(message)), max_pending)


def _check_pending(max_pending: int) -> None:
    if not isinstance(max_pending, int) or max_pending < 1:
        raise ValueError(f"max_pending must be a positive int, not {max_pending!r}")


# Flags of a message passed through Redis.
_TEXT = 1
_ALL = 2
_HEADER = struct.Struct("!8sBH")  # origin, flags, length of the room's name


class Rooms:
    """Named groups of connections, and messages to all of a group's members.

    ``Rooms()`` covers this process.  ``Rooms("redis://host:port/db")``
    covers every process whose Rooms share that Redis and ``channel``: it
    returns at once and connects in the background (one pub/sub
    subscription per process; see :mod:`greenws._redis`).

    ``max_pending`` broadcast messages may wait for a member before it is
    closed with 1008; ``timeout`` is the longest :meth:`send` waits for
    Redis; ``health_check_interval`` how often a silent link is probed
    (a dead one is noticed within two intervals).  ``preset`` and the class
    keywords choose the threads or greenlets of the Redis link, as for
    connections (no call ever blocks a gevent/eventlet hub).
    """

    def __init__(
        self,
        url: Optional[str] = None,
        *,
        channel: str = "greenws",
        max_pending: int = DEFAULT_MAX_PENDING,
        timeout: float = 5.0,
        health_check_interval: float = 5.0,
        preset: Optional[Any] = None,
        **classes: Any,
    ) -> None:
        _check_pending(max_pending)
        if not channel or not isinstance(channel, str):
            raise ValueError("channel must be a non-empty str")
        for name, value in (
            ("timeout", timeout),
            ("health_check_interval", health_check_interval),
        ):
            if not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"{name} must be a positive number, not {value!r}")
        self.url = url
        self.channel = channel
        self.max_pending = max_pending
        self.timeout = float(timeout)
        self.health_check_interval = float(health_check_interval)
        self.preset = _presets.resolve(preset, **classes)
        # room -> its members (a dict as an ordered set); member -> its rooms
        self._rooms: Dict[str, Dict[Base, None]] = {}
        self._joined: Dict[Base, Set[str]] = {}
        self._link: Any = None
        self._pid = os.getpid()
        self._origin = os.urandom(8)
        _instances.add(self)
        if url is not None:
            from ._redis import parse_url

            parse_url(url)  # a bad URL fails here, not in the background
            self._link = self._new_link()

    def _new_link(self) -> Any:
        from ._redis import RedisLink

        assert self.url is not None
        return RedisLink(
            self.url,
            self.channel,
            self._from_redis,
            timeout=self.timeout,
            health_check_interval=self.health_check_interval,
            preset=self.preset,
        )

    def _redis(self) -> Any:
        """The Redis link of this process (a forked worker makes its own)."""
        link = self._link
        if link is not None and self._pid != os.getpid():
            self._pid = os.getpid()
            self._origin = os.urandom(8)
            link.forget()
            link = self._link = self._new_link()
        return link

    # -- membership -----------------------------------------------------------

    def join(self, ws: Base, room: str) -> None:
        """Add ``ws`` to ``room``; it gets the room's messages from now on.

        A closed connection is not added; one that closes later leaves by
        itself.
        """
        if not isinstance(ws, Base):
            raise TypeError(f"a greenws Server or Client is needed, not {ws!r}")
        if not isinstance(room, str):
            raise TypeError(f"room names are str, not {type(room).__name__}")
        self._redis()
        with _lock:
            self._rooms.setdefault(room, {})[ws] = None
            self._joined.setdefault(ws, set()).add(room)
        if _member(ws) is None:  # closed (maybe meanwhile: its hook ran first)
            self._drop(ws)

    def leave(self, ws: Base, room: Optional[str] = None) -> None:
        """Remove ``ws`` from ``room``, or from every room when None."""
        if room is None:
            self._drop(ws)
            return
        with _lock:
            members = self._rooms.get(room)
            if members is not None:
                members.pop(ws, None)
                if not members:
                    del self._rooms[room]
            joined = self._joined.get(ws)
            if joined is not None:
                joined.discard(room)
                if not joined:
                    del self._joined[ws]

    def _drop(self, ws: Base) -> None:
        with _lock:
            for room in self._joined.pop(ws, ()):
                members = self._rooms.get(room)
                if members is not None:
                    members.pop(ws, None)
                    if not members:
                        del self._rooms[room]

    def members(self, room: str) -> Set[Base]:
        """This process's members of ``room`` (a new set)."""
        with _lock:
            return set(self._rooms.get(room, ()))

    def rooms(self) -> List[str]:
        """The rooms with members in this process."""
        with _lock:
            return list(self._rooms)

    @property
    def connected(self) -> bool:
        """Whether the Redis link is up (always True without Redis)."""
        link = self._redis()
        return True if link is None else bool(link.connected)

    # -- sending --------------------------------------------------------------

    def send(self, room: str, message: Any) -> None:
        """Send ``message`` to every member of ``room``, in every process.

        The members in this process get it at once (never waiting for one of
        them, nor for Redis), while it goes through Redis to the others.
        Raises :class:`BroadcastError` if Redis cannot take it within
        ``timeout`` (the members here got it all the same).
        """
        if not isinstance(room, str):
            raise TypeError(f"room names are str, not {type(room).__name__}")
        data = _message(message)
        with _lock:
            members = list(self._rooms.get(room, ()))
        self._send(members, data, room, 0)

    def _send(self, members: List[Base], data: Union[str, bytes], room: str,
              flags: int) -> None:
        """Fan out here and, through Redis, everywhere else at the same
        time (the message leaves for Redis first, see RedisLink.publish)."""
        shared = Shared(data)
        link = self._redis()
        if link is None:
            _fan_out(members, shared, self.max_pending)
        else:
            link.publish(
                self._pack(room, data, flags),
                lambda: _fan_out(members, shared, self.max_pending),
            )

    def send_all(self, message: Any) -> None:
        """Send ``message`` to every connection in any room, everywhere,
        once each (see :meth:`send`)."""
        data = _message(message)
        with _lock:
            members = list(self._joined)
        self._send(members, data, "", _ALL)

    def close(self) -> None:
        """Drop the Redis link (members stay connected and in their rooms)."""
        link = self._link
        if link is not None:
            link.close()

    def __enter__(self) -> Rooms:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- across processes -----------------------------------------------------

    def _pack(self, room: str, data: Union[str, bytes], flags: int) -> bytes:
        name = room.encode("utf-8")
        if isinstance(data, str):
            flags |= _TEXT
            body = data.encode("utf-8")
        else:
            body = data
        return _HEADER.pack(self._origin, flags, len(name)) + name + body

    def _from_redis(self, payload: bytes) -> None:
        """A message from Redis (called by the link's reader): fan it out
        here, unless it came from this very object."""
        if len(payload) < _HEADER.size:
            return
        origin, flags, size = _HEADER.unpack_from(payload)
        if origin == self._origin:
            return  # our members had it when it was sent
        start = _HEADER.size
        room = payload[start : start + size].decode("utf-8", "replace")
        body = payload[start + size :]
        data: Union[str, bytes] = body
        if flags & _TEXT:
            data = body.decode("utf-8", "replace")
        with _lock:
            if flags & _ALL:
                members = list(self._joined)
            else:
                members = list(self._rooms.get(room, ()))
        _fan_out(members, Shared(data), self.max_pending)
