"""The sans-I/O side of an open WebSocket: bytes in, messages and replies out.

:class:`Protocol` wraps a :class:`wsproto.connection.Connection` (the frame
layer; the HTTP handshake is done before, see :mod:`greenws.handshake`). It
reassembles fragmented messages, enforces ``max_message_size`` while a message
is still arriving, and turns wsproto's events into the few things the I/O loop
acts on.  It never touches a socket, a thread or a clock.

Fast path.  Nearly all traffic is single-frame text or binary messages
(and, from greenws peers, binary messages over 1 MiB in 1 MiB fragments).
wsproto spends most of its time on per-frame objects (enums, named tuples,
events, incremental decoders), so for exactly that case -- and only while
wsproto sits between two messages -- :class:`Protocol` parses and builds
frames itself.  With greenws's permessage-deflate negotiated that includes
compressed frames under 64 KiB, each inflated or deflated in one call (see
:class:`~greenws.compression.BoundedDeflate`); browsers always offer the
extension, so this is their common case.  Anything else (control frames,
other fragments, other extensions, reserved bits, non-minimal lengths, bad UTF-8 or
zlib data, oversized messages) is handed to wsproto unchanged, from a frame
boundary, so wsproto stays the one judge of what is valid and which close
code an error gets.
"""

from __future__ import annotations

import os
import struct
from typing import Callable, Dict, Iterator, List, Optional, Tuple, Union, overload

from wsproto.connection import Connection, ConnectionState
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Pong,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError

from .compression import BoundedDeflate, deflate_message
from .smalldeque import SmallDeque

__all__ = [
    "Protocol",
    "Shared",
    "MESSAGE",
    "PING",
    "PONG",
    "CLOSE",
    "FAIL",
    "NORMAL_CLOSURE",
    "GOING_AWAY",
    "NO_STATUS",
    "ABNORMAL",
    "MESSAGE_TOO_BIG",
    "INTERNAL_ERROR",
]

NORMAL_CLOSURE = 1000
GOING_AWAY = 1001
NO_STATUS = 1005
ABNORMAL = 1006
PROTOCOL_ERROR = 1002
MESSAGE_TOO_BIG = 1009
INTERNAL_ERROR = 1011

# What receive_data() reports, as (kind, value) pairs.
MESSAGE = 0  #: value: a whole message, ``str`` or ``bytes``
PING = 1  #: value: the ping payload, to be answered with a pong
PONG = 2  #: value: the pong payload
CLOSE = 3  #: value: (code, reason) of the peer's Close frame
FAIL = 4  #: value: (code, reason): we must fail the connection with this Close

Action = Tuple[int, object]

# Incomplete fast-path text frames up to this size are held until whole.
_HOLD_TEXT = 16 * 1024
# Reads shorter than this are merged when held (see Protocol._hold).
_SMALL_READ = 4096
# Binary frames from this size are joined without their header when whole.
_BIG = 64 * 1024
# Close reason of a message over max_message_size (code 1009).
_TOO_BIG = "message too big"
# The first byte's "compressed" bit (permessage-deflate, RFC 7692).
_RSV1 = 0x40
# Messages larger than this go out in fragments of this size, so that pings
# and pongs can be sent between them instead of waiting for the whole message.
_FRAGMENT = 1024 * 1024
Message = Union[str, bytes]
#: Binary data send_message() takes.
Binary = Union[bytes, bytearray, memoryview]
#: One frame: its bytes, or for a large unmasked frame its first bytes and a
#: view of the rest of the payload, to be sent in order.
Frame = Union[bytes, Tuple[bytes, memoryview]]
#: What send_message() returns: one frame, or for a message over _FRAGMENT
#: bytes, an iterator that builds its fragments one at a time.
Wire = Union[Frame, Iterator[Frame]]
# What a held part of an incomplete frame can be (see Protocol._hold).
_Held = Union[bytes, bytearray, memoryview]


class Protocol:
    """Frame-level state of one connection, free of I/O."""

    __slots__ = (
        "_conn",
        "max_message_size",
        "_parts",
        "_size",
        "_failed",
        "_client",
        "_held",
        "_big",
        "_frag",
        "_wsproto_busy",
        "_deflate",
        "wanted",
    )

    def __init__(self, conn: Connection, max_message_size: Optional[int] = None):
        self._conn = conn
        events = getattr(conn, "_events", None)
        if events is not None and not events:
            # wsproto's deque only ever holds the events of one
            # receive_data() call.
            conn._events = SmallDeque()  # type: ignore[assignment]
        self.max_message_size = max_message_size
        self._parts: List[Union[str, bytes]] = []
        self._size = 0
        self._failed = False
        self._client = conn.client
        # The received part of a fast-path frame that has not fully arrived,
        # as the reads brought it (see _hold).
        self._held: List[_Held] = []
        # (first byte, masking key or b"") of a held large binary frame or
        # fragment whose header is held[0] and payload the rest (see _keep);
        # large text frames never get here, they go to wsproto.
        self._big: Optional[Tuple[int, bytes]] = None
        # The fragments so far of a binary message arriving in fragments
        # (_size counts their bytes), or None.
        self._frag: Optional[List[bytes]] = None
        # permessage-deflate, when negotiated with greenws's own extension
        # (the only one the fast path knows how to apply).
        extensions = conn._proto.extensions
        self._deflate: Optional[BoundedDeflate] = None
        if len(extensions) == 1 and isinstance(extensions[0], BoundedDeflate):
            self._deflate = extensions[0]
        # True while wsproto holds part of a frame or of a fragmented message
        # (from the start, if bytes came in right behind the handshake).
        self._wsproto_busy = not self._wsproto_idle()
        #: Bytes still missing from the frame being received (a read-size hint).
        self.wanted = 0

    @property
    def state(self) -> ConnectionState:
        """wsproto's view: OPEN, LOCAL_CLOSING, REMOTE_CLOSING or CLOSED."""
        return self._conn.state

    @property
    def extensions(self) -> List[str]:
        """The negotiated extensions, as ``Sec-WebSocket-Extensions`` values."""
        return [
            getattr(ext, "agreed", None) or ext.name
            for ext in self._conn._proto.extensions
            if ext.enabled()
        ]

    @overload
    def send(self, event: Event) -> bytes: ...
    @overload
    def send(self, event: Shared) -> Wire: ...

    def send(self, event: Union[Event, Shared]) -> Wire:
        """Serialise ``event``; raises ``LocalProtocolError`` once closing.

        A :class:`Shared` message gives the bytes it shares with every
        connection that frames it the same way (see :meth:`send_shared`).
        """
        if type(event) is Shared:
            return self.send_shared(event)
        return self._conn.send(event)  # type: ignore[arg-type]

    def send_shared(self, shared: Shared) -> Wire:
        """The frame of a message going to many connections.

        A server connection takes the frame built (and compressed) once for
        every connection with the same permessage-deflate window, or none; a
        client masks each frame with a key of its own, around the payload
        compressed once.  Where this connection frames otherwise (an
        extension keeping context between messages, wsproto mid-message, a
        message over 1 MiB) it frames the message itself.
        """
        if shared.single:
            bits = self.shared_bits()
            if bits is not None:
                return shared.frame(bits, self._client)
        return self.send_message(shared.message)

    def shared_bits(self) -> Optional[int]:
        """The permessage-deflate window (0: none) a :class:`Shared` message
        is framed with here, or ``None`` where this connection must frame it
        itself: an extension keeping context between messages, another
        extension, wsproto mid-message, or closing.

        Between messages (the write lock free) it stays the same for the
        connection's open life: fresh-context compression never keeps a
        compressor, so :mod:`greenws.rooms` asks once per member.
        """
        conn = self._conn
        if (
            conn.state is not ConnectionState.OPEN
            or conn._proto._outbound_opcode is not None
        ):
            return None
        deflate = self._deflate
        if deflate is not None:
            return deflate.fresh_bits(self._client)
        return None if conn._proto.extensions else 0

    def send_message(
        self, data: Union[str, Binary], text: Optional[bool] = None
    ) -> Wire:
        """Serialise one whole text (``str``) or binary message.

        Binary data may be a ``bytearray`` or a ``memoryview`` of bytes
        (format ``B``, contiguous): it is not copied before framing.
        ``text=True`` sends binary data, which must be UTF-8 already, as a
        text message without decoding it (it is not checked: the peer
        fails the connection with 1007 if it is not UTF-8); ``text=False``
        sends a ``str`` as a binary message of its UTF-8.

        Same bytes as ``send(TextMessage(...))``/``send(BytesMessage(...))``;
        unless wsproto is mid-message or an extension other than greenws's
        permessage-deflate is on, the frame is built here, which is much
        cheaper.
        A large frame that needs no mask comes in two pieces (see
        :data:`Frame`), so that its payload is not copied.  A message over
        1 MiB comes as an iterator of 1 MiB fragments (RFC 6455 5.4), built
        as they are sent: control frames may go between them.
        """
        conn = self._conn
        if conn.state is not ConnectionState.OPEN:
            raise LocalProtocolError(f"cannot send a message in state {conn.state}")
        proto = conn._proto
        deflate = self._deflate
        if proto._outbound_opcode is None and (
            deflate is not None or not proto.extensions
        ):
            payload: Binary
            if isinstance(data, str):
                payload = data.encode("utf-8")
                first = 0x82 if text is False else 0x81
            else:
                payload = data
                first = 0x81 if text else 0x82
            if deflate is None:
                if len(payload) > _FRAGMENT:
                    return _fragments(first, payload, self._client)
                return _frame(first, payload, self._client)
            squeezed = deflate.deflate_whole(payload, self._client)
            if squeezed is not None:
                if len(squeezed) > _FRAGMENT:
                    return _fragments(first | _RSV1, squeezed, self._client)
                return _frame(first | _RSV1, squeezed, self._client)
        if text is not None and isinstance(data, str) is not text:
            # wsproto frames str as text and bytes as binary.
            data = data.encode("utf-8") if isinstance(data, str) else (
                bytes(data).decode("utf-8")
            )
        if len(data) > _FRAGMENT:
            return self._wsproto_fragments(data)
        event: Event = (
            TextMessage(data=data)
            if isinstance(data, str)
            # wsproto takes any buffer (and copies it into its frame).
            else BytesMessage(data=data)  # type: ignore[arg-type]
        )
        return conn.send(event)

    def _wsproto_fragments(self, data: Union[str, Binary]) -> Iterator[Frame]:
        """wsproto's frames for a large message, _FRAGMENT bytes (or, for
        text, characters) of it at a time; wsproto's extensions (say
        permessage-deflate with context takeover) see one message."""
        conn = self._conn
        text = isinstance(data, str)
        end = len(data)
        for start in range(0, end, _FRAGMENT):
            part = data[start : start + _FRAGMENT]
            last = start + _FRAGMENT >= end
            event: Event = (
                TextMessage(data=part, message_finished=last)  # type: ignore[arg-type]
                if text
                else BytesMessage(data=part, message_finished=last)  # type: ignore[arg-type]
            )
            yield conn.send(event)

    def receive_data(self, data: bytes) -> List[Action]:
        """Feed bytes from the peer; return what they mean, in order.

        After a ``CLOSE`` or ``FAIL`` action nothing more is reported: the
        connection is over as far as incoming data goes.
        """
        if self._failed or self._conn.state is ConnectionState.CLOSED:
            return []
        if self._wsproto_busy:
            return self._through_wsproto(data, [])
        held = self._held
        if held:
            if len(data) < self.wanted:
                self._hold(data)
                return []
            held.append(data)
            self._held = []
            big = self._big
            if big is not None:
                self._big = None
                if len(data) == self.wanted:
                    # This read completes a large frame exactly (reads are
                    # sized to do so): one join makes the payload.
                    self.wanted = 0
                    parts = held[1:]
                    first, key = big
                    payload = _unmask_parts(parts, key) if key else b"".join(parts)
                    if first == 0x82:
                        return [(MESSAGE, payload)]
                    return self._fragment(first, payload, [])
            view = b"".join(held)
        else:
            view = data
        actions: List[Action] = []
        pos = 0
        end = len(view)
        limit = self.max_message_size
        want_mask = not self._client
        deflate = self._deflate
        while True:
            if end - pos < 2:
                if pos < end:
                    self._keep(view, pos, 2)
                    return actions
                break
            first = view[pos]
            second = view[pos + 1]
            frag = self._frag
            squeezed = first & _RSV1
            if squeezed:
                if deflate is None or frag is not None:
                    break  # wsproto fails it (1002)
                first ^= _RSV1
            if bool(second & 0x80) != want_mask:
                break
            if frag is None:
                # A whole message, or the first fragment of a binary one.
                if first != 0x81 and first != 0x82 and (first != 0x02 or squeezed):
                    break
            elif first & 0x7F:  # not a continuation
                if not first & 0x08:
                    self._failed = True
                    actions.append((FAIL, (PROTOCOL_ERROR, "expected a continuation")))
                    return actions
                # A control frame between two fragments goes to wsproto
                # alone (it sits between messages as far as it knows).
                stop = pos + 2 + (4 if want_mask else 0) + (second & 0x7F)
                if (second & 0x7F) > 125:
                    stop = end  # invalid: wsproto says so from the header
                if stop > end:
                    self._keep(view, pos, stop - pos)
                    return actions
                actions = self._through_wsproto(bytes(view[pos:stop]), actions)
                if actions and actions[-1][0] >= CLOSE:
                    self._frag = None
                    return actions
                pos = stop
                continue
            length = second & 0x7F
            start = pos + 2
            if length == 126:
                if end - pos < 4:
                    self._keep(view, pos, 4)
                    return actions
                length = (view[start] << 8) | view[start + 1]
                start += 2
                if length < 126:
                    break
            elif length == 127:
                if end - pos < 10:
                    self._keep(view, pos, 10)
                    return actions
                (length,) = struct.unpack_from("!Q", view, start)
                start += 8
                if length < 65536 or length >> 63:
                    break
            if squeezed:
                # Only small ones: in a large message zlib's cost dwarfs
                # wsproto's, and its hooks inflate as the frame arrives.
                if length >= _BIG:
                    break
            elif limit is not None and length > limit - self._size:
                if frag is None and first != 0x02:
                    break  # wsproto fails it
                self._failed = True
                self._frag = None
                actions.append((FAIL, (MESSAGE_TOO_BIG, "message too big")))
                return actions
            if want_mask:
                start += 4
            stop = start + length
            if stop > end:
                if first == 0x81 and length > _HOLD_TEXT:
                    # A long text frame goes to wsproto, which validates UTF-8
                    # as it arrives and fails fast on the first bad byte.
                    break
                if length >= _BIG:
                    self._keep(view, pos, stop - pos, start)
                    key = bytes(view[start - 4 : start]) if want_mask else b""
                    self._big = (first, key)
                else:
                    self._keep(view, pos, stop - pos)
                return actions
            # One copy out of the read buffer: the unmasking itself, or a
            # plain copy when there is no mask.
            with memoryview(view) as whole_view:
                if want_mask and length:
                    payload = _unmask(
                        whole_view[start:stop], bytes(whole_view[start - 4 : start])
                    )
                else:
                    payload = bytes(whole_view[start:stop])
            if first < 0x81:  # a fragment
                self._fragment(first, payload, actions)
                pos = stop
                continue
            if squeezed:
                assert deflate is not None
                inflated = deflate.inflate_whole(payload, self._client)
                if inflated is None:
                    break  # wsproto takes the frame and reports what is wrong
                payload = inflated
            if first == 0x81:
                try:
                    message: Message = payload.decode("utf-8")
                except UnicodeDecodeError:
                    break  # wsproto reports it (1007)
            else:
                message = payload
            actions.append((MESSAGE, message))
            pos = stop
        self.wanted = 0
        if pos == end:
            return actions
        # Not a frame the fast path handles: wsproto takes over from here.
        return self._through_wsproto(bytes(view[pos:]), actions)

    def _fragment(
        self, first: int, payload: bytes, actions: List[Action]
    ) -> List[Action]:
        """Add a fragment of a binary message (``first``: 0x02 the first,
        0x00 a middle one, 0x80 the last); the whole message when it is in."""
        if first == 0x02:
            self._frag = [payload]
            self._size = len(payload)
            return actions
        frag = self._frag
        assert frag is not None
        frag.append(payload)
        self._size += len(payload)
        if first == 0x80:
            self._frag = None
            self._size = 0
            actions.append((MESSAGE, b"".join(frag)))
        return actions

    def _keep(
        self, view: bytes, pos: int, frame_size: int, start: Optional[int] = None
    ) -> None:
        """Hold the start of an incomplete fast-path frame; ``wanted`` is
        what must arrive before it is worth parsing again.

        ``start`` (large frames only), where the payload begins, splits what
        is held into header and payload so that the payload can later be
        joined without its header (no second copy).  Smaller frames keep a
        copy of their start, not a view pinning the whole read.
        """
        self._big = None
        if start is None:
            self._held = [view[pos:] if pos else view]
        else:
            self._held = [view[pos:start], memoryview(view)[start:]]
        self.wanted = frame_size - (len(view) - pos)

    def _hold(self, data: bytes) -> None:
        """Add a read to the held frame.

        The parts are joined once, when the frame is complete: growing one
        buffer read by read costs far more for large frames (every growth
        touches fresh memory).  Small reads go into a shared bytearray so
        that a peer trickling bytes cannot make the list cost more than the
        data.
        """
        held = self._held
        if len(data) >= _SMALL_READ:
            held.append(data)
        elif type(held[-1]) is bytearray:
            held[-1] += data
        else:
            held.append(bytearray(data))
        self.wanted -= len(data)

    def _through_wsproto(self, data: bytes, actions: List[Action]) -> List[Action]:
        conn = self._conn
        try:
            conn.receive_data(data)
        except LocalProtocolError:  # pragma: no cover - guarded by receive_data
            return actions
        append = actions.append
        for event in conn.events():
            kind = type(event)
            if kind is TextMessage or kind is BytesMessage:
                data_part = event.data  # type: ignore[attr-defined]
                # The limit is in bytes, whatever the message type.
                self._size += (
                    len(data_part.encode("utf-8", "surrogatepass"))
                    if kind is TextMessage
                    else len(data_part)
                )
                limit = self.max_message_size
                if limit is not None and self._size > limit:
                    self._failed = True
                    self._parts = []
                    append((FAIL, (MESSAGE_TOO_BIG, _TOO_BIG)))
                    break
                if event.message_finished:  # type: ignore[attr-defined]
                    parts = self._parts
                    if parts:
                        parts.append(data_part)
                        whole: Message = (
                            "".join(parts) if kind is TextMessage else b"".join(parts)  # type: ignore[arg-type]
                        )
                        self._parts = []
                    elif kind is BytesMessage:
                        whole = bytes(data_part)
                    else:
                        whole = data_part
                    self._size = 0
                    append((MESSAGE, whole))
                else:
                    self._parts.append(data_part)
            elif kind is Ping:
                append((PING, bytes(event.payload)))  # type: ignore[attr-defined]
            elif kind is Pong:
                append((PONG, bytes(event.payload)))  # type: ignore[attr-defined]
            elif kind is CloseConnection:
                assert isinstance(event, CloseConnection)
                if conn.state in (ConnectionState.OPEN, ConnectionState.LOCAL_CLOSING):
                    # wsproto reports a protocol violation as a CloseConnection
                    # without changing state: it was never sent by the peer.
                    self._failed = True
                    # wsproto says "error in extension" when our inflater
                    # stops a message at max_message_size.
                    reason = (
                        _TOO_BIG if event.code == MESSAGE_TOO_BIG
                        else event.reason or ""
                    )
                    append((FAIL, (event.code, reason)))
                else:
                    append((CLOSE, (event.code, event.reason)))
                break
        self._wsproto_busy = not self._wsproto_idle()
        return actions

    def _wsproto_idle(self) -> bool:
        """True when wsproto holds no partial frame and no partial message."""
        if self._parts:
            return False
        proto = getattr(self._conn, "_proto", None)
        decoder = getattr(proto, "_frame_decoder", None)
        messages = getattr(proto, "_message_decoder", None)
        try:
            return (
                decoder.header is None  # type: ignore[union-attr]
                and len(decoder.buffer) == 0  # type: ignore[union-attr]
                and messages.opcode is None  # type: ignore[union-attr]
            )
        except AttributeError:  # another wsproto: stay on the slow path
            return False


class Shared:
    """One message for many connections: :meth:`Protocol.send` takes it.

    Its frames are built on first use, once per permessage-deflate window
    (0: uncompressed), and reused by every connection that needs that one
    (:mod:`greenws.rooms`).  ``message`` is a ``str`` (text) or ``bytes``.
    """

    __slots__ = ("message", "payload", "single", "_first", "_built")

    def __init__(self, message: Message) -> None:
        self.message = message
        if isinstance(message, str):
            self.payload: bytes = message.encode("utf-8")
            self._first = 0x81
        else:
            self.payload = message
            self._first = 0x82
        #: Whether it goes in one frame (not over 1 MiB, see _fragments).
        self.single = len(self.payload) <= _FRAGMENT
        # bits -> unmasked frame; -bits -> compressed payload
        self._built: Dict[int, object] = {}

    def frame(self, bits: int, masked: bool) -> Frame:
        """The frame for a window of ``bits`` (0: no compression)."""
        built = self._built
        if not masked:
            frame = built.get(bits)
            if frame is None:
                first = self._first | _RSV1 if bits else self._first
                frame = built[bits] = _frame(first, self._squeezed(bits), False)
            return frame  # type: ignore[return-value]
        first = self._first | _RSV1 if bits else self._first
        return _frame(first, self._squeezed(bits), True)

    def _squeezed(self, bits: int) -> bytes:
        if not bits:
            return self.payload
        squeezed = self._built.get(-bits)
        if squeezed is None:
            squeezed = self._built[-bits] = deflate_message(self.payload, bits)
        return squeezed  # type: ignore[return-value]


def _unmask_python(
    payload: Binary, key: bytes, prefix: bytes = b""
) -> bytes:
    """``prefix`` + ``payload`` XORed with the 4-byte masking ``key``
    (RFC 6455 5.3)."""
    n = len(payload)
    if n < 2048:
        # One big-integer XOR: cheapest for small payloads.
        repeated = key * (n // 4 + 1)
        return prefix + (
            int.from_bytes(payload, "little") ^ int.from_bytes(repeated[:n], "little")
        ).to_bytes(n, "little")
    # Large payloads: every 4th byte shares a key byte, so four C-speed
    # translate() passes over strided slices do the whole XOR.
    tables = _xor_tables()
    out = bytearray(payload)
    for i in range(4):
        out[i::4] = out[i::4].translate(tables[key[i]])
    return prefix + out


_XOR_TABLES: List[bytes] = []


def _xor_tables() -> List[bytes]:
    """``tables[k][b] == b ^ k``: built on first use (64 KiB)."""
    if not _XOR_TABLES:
        _XOR_TABLES.extend(bytes(b ^ k for b in range(256)) for k in range(256))
    return _XOR_TABLES


def _unmask_parts_python(parts: List[_Held], key: bytes) -> bytes:
    """Join ``parts`` and unmask the result."""
    return _unmask_python(b"".join(parts), key)


_unmask: Callable[..., bytes] = _unmask_python
_unmask_parts: Callable[[List[_Held], bytes], bytes] = _unmask_parts_python
try:  # the C versions (greenws/_speedups.c) when they could be built
    from ._speedups import apply_mask, unmask_parts

    _unmask, _unmask_parts = apply_mask, unmask_parts
except ImportError:  # pragma: no cover - no compiler at install time
    pass


def _fragments(first: int, payload: Binary, masked: bool) -> Iterator[Frame]:
    """The frames of one message over _FRAGMENT bytes, built one at a time
    (a masked frame is a copy: this bounds the copies to one fragment).

    ``first`` is the first frame's FIN/RSV/opcode byte; FIN is set on the
    last frame only, the others continue the message (opcode 0).
    """
    with memoryview(payload) as view:
        end = len(view)
        byte = first & 0x7F  # FIN only on the last frame
        for start in range(0, end, _FRAGMENT):
            stop = start + _FRAGMENT
            if stop >= end:
                byte |= 0x80
            yield _frame(byte, view[start:stop], masked)
            byte = 0


def _frame(first: int, payload: Binary, masked: bool) -> Frame:
    """One complete frame: ``first`` is the FIN/RSV/opcode byte."""
    n = len(payload)
    mask_bit = 0x80 if masked else 0
    if n < 126:
        header = bytes((first, mask_bit | n))
    elif n < 65536:
        header = struct.pack("!BBH", first, mask_bit | 126, n)
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, n)
    if masked:
        key = os.urandom(4)
        return _unmask(payload, key, header + key)
    if n > _BIG:
        # Concatenating would copy the payload, and allocating and freeing
        # that copy per message is what makes the C library hand large
        # blocks back to the kernel and fault them in again.  The first
        # piece carries some payload so that the header is not a packet of
        # its own.
        return header + payload[:_BIG], memoryview(payload)[_BIG:]
    return header + payload


def is_close(frame: Wire) -> bool:
    """Whether ``frame`` (one whole frame, as :meth:`Protocol.send` returns
    it) is a Close frame: FIN and opcode 0x8 (RFC 6455 5.2)."""
    return type(frame) is bytes and frame[:1] == b"\x88"
