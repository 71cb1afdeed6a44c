"""permessage-deflate (RFC 7692) with bounded zlib memory.

wsproto's :class:`~wsproto.extensions.PerMessageDeflate` uses zlib's default
window (32 KiB) and memory level (8): about 330 KiB per connection once both
directions have compressed a message.  Ten thousand connections in one worker
cannot afford that, so greenws compresses with a small window and memory level,
asks the peer to compress with a small window where the offer lets it, and
drops the zlib state between messages (no context takeover) so an idle
connection holds no zlib memory at all.
"""

from __future__ import annotations

import sys
import zlib
from typing import Optional, Union

from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import (
    CloseReason,
    FrameDecoder,
    FrameProtocol,
    Opcode,
    RsvBits,
)

__all__ = ["BoundedDeflate", "WINDOW_BITS", "MEM_LEVEL", "deflate_message"]

#: LZ77 window (2**12 = 4 KiB) used by our compressor and asked of the peer.
WINDOW_BITS = 12
#: zlib memory level of our compressor (2**(5+9) = 16 KiB of hash tables).
MEM_LEVEL = 5
# What the sender strips from the end of each compressed message (RFC 7692
# 7.2.1) and the receiver puts back before inflating.
_TAIL = b"\x00\x00\xff\xff"


def deflate_message(data: Union[bytes, bytearray, memoryview], bits: int) -> bytes:
    """``data`` compressed as one message with a fresh context and a window of
    ``bits`` (at most :data:`WINDOW_BITS`), its tail stripped (RFC 7692 7.2.1).

    The result depends on nothing else, so one message going to many
    connections that agreed on the same window is compressed once
    (:mod:`greenws.rooms`).
    """
    compressor = zlib.compressobj(
        zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -min(bits, WINDOW_BITS), MEM_LEVEL
    )
    return (compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]


class BoundedDeflate(PerMessageDeflate):
    """PerMessageDeflate whose zlib objects stay small and short-lived.

    It offers and accepts ``client_max_window_bits`` / ``server_max_window_bits``
    of :data:`WINDOW_BITS` and ``*_no_context_takeover`` in both directions,
    and inflates incoming messages no further than ``max_size``.
    """

    def __init__(self, max_size: Optional[int] = None) -> None:
        #: Largest message (after inflation) accepted; None for no limit.  A
        #: message that would inflate past it fails with 1009 as soon as the
        #: limit is crossed, so a compression bomb never inflates in memory.
        self.max_size = max_size
        self._inflated = 0
        # True while a control frame is being received: wsproto runs the
        # extension hooks for control frames too, and they must not touch
        # the state of a compressed message those frames interrupt.
        self._in_control = False
        # wsproto calls frame_inbound_header again for the same frame when
        # the masking key has not fully arrived; True until its payload starts.
        self._header_pending = False
        #: The ``Sec-WebSocket-Extensions`` value this was negotiated with
        #: (what the server answered), once negotiated.
        self.agreed: Optional[str] = None
        super().__init__(
            client_no_context_takeover=True,
            client_max_window_bits=WINDOW_BITS,
            server_no_context_takeover=True,
            server_max_window_bits=WINDOW_BITS,
        )

    def accept(self, offer: str) -> Union[bool, None, str]:
        # The server may always ask for no context takeover in both directions
        # (RFC 7692 7.1.1.1, 7.1.1.2), and may cap its own window; the client's
        # window can only be capped if the client announced it understands the
        # parameter.
        params = [p.strip() for p in offer.split(";")[1:]]
        names = {p.split("=", 1)[0].strip() for p in params}
        requested_server_bits = None
        for p in params:
            if p.startswith("server_max_window_bits") and "=" in p:
                try:
                    requested_server_bits = int(p.split("=", 1)[1].strip().strip('"'))
                except ValueError:
                    return None
                if not 8 <= requested_server_bits <= 15:
                    return None
        server_bits = min(WINDOW_BITS, requested_server_bits or 15)
        # zlib cannot produce a raw deflate stream with an 8-bit window.
        server_bits = max(server_bits, 9)
        if requested_server_bits is not None and requested_server_bits < server_bits:
            return None
        self.server_max_window_bits = server_bits
        self.server_no_context_takeover = True
        self.client_no_context_takeover = True
        parts = [
            "server_no_context_takeover",
            "client_no_context_takeover",
            f"server_max_window_bits={server_bits}",
        ]
        if "client_max_window_bits" in names:
            client_bits = WINDOW_BITS
            for p in params:
                if p.startswith("client_max_window_bits") and "=" in p:
                    try:
                        client_bits = min(client_bits, int(p.split("=", 1)[1]))
                    except ValueError:
                        return None
            client_bits = max(client_bits, 9)
            self.client_max_window_bits = client_bits
            parts.append(f"client_max_window_bits={client_bits}")
        else:
            self.client_max_window_bits = 15
        self._enabled = True
        accepted = "; ".join(parts)
        # A few distinct values among many connections: shared, not copied.
        self.agreed = sys.intern(f"{self.name}; {accepted}")
        return accepted

    def finalize(self, offer: str) -> None:
        # Client side: the server's answer is authoritative.  Parameters it
        # leaves out take their RFC defaults, not the values we offered.
        self.server_no_context_takeover = False
        self.server_max_window_bits = 15
        super().finalize(offer)
        self.client_no_context_takeover = True
        self.agreed = offer.strip()

    def frame_outbound(
        self,
        proto: Union[FrameDecoder, FrameProtocol],
        opcode: Opcode,
        rsv: RsvBits,
        data: bytes,
        fin: bool,
    ) -> tuple[RsvBits, bytes]:
        if self._compressor is None and opcode in (Opcode.TEXT, Opcode.BINARY):
            self._compressor = self._new_compressor(proto.client)
        return super().frame_outbound(proto, opcode, rsv, data, fin)

    def _new_compressor(self, client: bool) -> zlib._Compress:
        bits = self.client_max_window_bits if client else self.server_max_window_bits
        return zlib.compressobj(
            zlib.Z_DEFAULT_COMPRESSION,
            zlib.DEFLATED,
            -min(bits, WINDOW_BITS),
            MEM_LEVEL,
        )

    # Whole messages, for greenws.protocol's fast path: one call per message
    # instead of wsproto's frame-by-frame hooks.  Both work only where each
    # message has a fresh zlib context in that direction (no context
    # takeover), so that they leave no state behind.

    def deflate_whole(
        self, data: Union[bytes, bytearray, memoryview], client: bool
    ) -> Optional[bytes]:
        """``data`` compressed as one message, exactly as :meth:`frame_outbound`
        would; ``None`` if the compressor keeps its context between messages."""
        bits = self.fresh_bits(client)
        if bits is None:
            return None
        return deflate_message(data, bits)

    def fresh_bits(self, client: bool) -> Optional[int]:
        """The window our next message is compressed with, if it gets a
        fresh context (see :func:`deflate_message`); else ``None``."""
        fresh = self.client_no_context_takeover if client else (
            self.server_no_context_takeover
        )
        if not fresh or self._compressor is not None:
            return None
        bits = self.client_max_window_bits if client else self.server_max_window_bits
        return min(bits, WINDOW_BITS)

    def inflate_whole(self, payload: bytes, client: bool) -> Optional[bytes]:
        """The message one compressed frame carries, or ``None`` when it must
        go through wsproto instead: the peer keeps its context between
        messages, or the data is corrupt or inflates past ``max_size``
        (wsproto and the hooks above then report the right close code)."""
        fresh = self.server_no_context_takeover if client else (
            self.client_no_context_takeover
        )
        if not fresh or self._decompressor is not None:
            return None
        bits = self.server_max_window_bits if client else self.client_max_window_bits
        decompressor = zlib.decompressobj(-bits)
        limit = self.max_size
        try:
            out = decompressor.decompress(
                payload + _TAIL, 0 if limit is None else limit + 1
            )
        except zlib.error:
            return None
        if decompressor.unconsumed_tail or (limit is not None and len(out) > limit):
            return None
        return out

    def frame_inbound_header(
        self,
        proto: Union[FrameDecoder, FrameProtocol],
        opcode: Opcode,
        rsv: RsvBits,
        payload_length: int,
    ) -> Union[CloseReason, RsvBits]:
        retry = self._header_pending
        self._header_pending = True
        self._in_control = opcode.iscontrol()
        if self._in_control:
            return (
                CloseReason.PROTOCOL_ERROR if rsv.rsv1 else RsvBits(True, False, False)
            )
        if (
            not retry
            and opcode is not Opcode.CONTINUATION
            and self._inbound_compressed is not None
        ):
            # A new message before the compressed one ended: a protocol
            # error (1002), to be reported before trying to inflate anything.
            return CloseReason.PROTOCOL_ERROR
        return super().frame_inbound_header(proto, opcode, rsv, payload_length)

    def frame_inbound_payload_data(
        self, proto: Union[FrameDecoder, FrameProtocol], data: bytes
    ) -> Union[bytes, CloseReason]:
        self._header_pending = False
        if self._in_control:
            return data
        if self.max_size is None or not (
            self._inbound_compressed and self._inbound_is_compressible
        ):
            return super().frame_inbound_payload_data(proto, data)
        assert self._decompressor is not None
        try:
            out = self._decompressor.decompress(
                bytes(data), self.max_size - self._inflated + 1
            )
        except zlib.error:
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA
        return self._count(out)

    def frame_inbound_complete(
        self, proto: Union[FrameDecoder, FrameProtocol], fin: bool
    ) -> Union[bytes, CloseReason, None]:
        if self._in_control:
            self._in_control = False
            return None
        result = super().frame_inbound_complete(proto, fin)
        if isinstance(result, bytes) and self.max_size is not None:
            result = self._count(result)
        if fin:
            self._inflated = 0
        return result

    def _count(self, out: bytes) -> Union[bytes, CloseReason]:
        """Add inflated bytes to the message total; 1009 past the limit."""
        self._inflated += len(out)
        assert self.max_size is not None
        decompressor = self._decompressor
        if self._inflated > self.max_size or (
            decompressor is not None and decompressor.unconsumed_tail
        ):
            return CloseReason.MESSAGE_TOO_BIG
        return out
