"""greenws.protocol: the sans-I/O frame layer, fed bytes by hand."""

import os
import struct

import pytest
from conftest import OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, frame
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, TextMessage

from greenws.protocol import CLOSE, FAIL, MESSAGE, PING, PONG, Protocol


def server_protocol(max_message_size=None):
    return Protocol(Connection(ConnectionType.SERVER), max_message_size)


def client_protocol(max_message_size=None):
    return Protocol(Connection(ConnectionType.CLIENT), max_message_size)


def masked(opcode, payload=b"", fin=True):
    return frame(opcode, payload, mask=True, fin=fin)


@pytest.mark.parametrize("side", ["server", "client"])
def test_messages_from_a_wsproto_peer(side):
    if side == "server":
        ours, peer = server_protocol(), Connection(ConnectionType.CLIENT)
    else:
        ours, peer = client_protocol(), Connection(ConnectionType.SERVER)
    data = peer.send(TextMessage(data="h\u00e9llo")) + peer.send(
        BytesMessage(data=b"\x00\x01")
    )
    data += peer.send(BytesMessage(data=os.urandom(70000)))
    actions = ours.receive_data(data)
    assert [kind for kind, _ in actions] == [MESSAGE] * 3
    assert actions[0][1] == "h\u00e9llo" and actions[1][1] == b"\x00\x01"
    assert isinstance(actions[2][1], bytes) and len(actions[2][1]) == 70000


def test_byte_by_byte_feeding():
    proto = server_protocol()
    payload = os.urandom(300)
    data = masked(OP_BINARY, payload) + masked(OP_TEXT, "t\u20ac")
    actions = []
    for i in range(len(data)):
        actions += proto.receive_data(data[i:i + 1])
    assert actions == [(MESSAGE, payload), (MESSAGE, "t\u20ac")]


def test_fragments_reassembled_with_control_frames_between():
    proto = server_protocol()
    data = (
        masked(OP_TEXT, "ab", fin=False)
        + masked(OP_PING, b"p1")
        + masked(OP_CONT, "cd", fin=False)
        + masked(OP_CONT, "\u20ac")
    )
    assert proto.receive_data(data) == [(PING, b"p1"), (MESSAGE, "abcd\u20ac")]
    binary = masked(OP_BINARY, b"12", fin=False) + masked(OP_CONT, b"34")
    assert proto.receive_data(binary) == [(MESSAGE, b"1234")]


def test_ping_pong_close_actions():
    proto = server_protocol()
    assert proto.receive_data(masked(OP_PING, b"abc")) == [(PING, b"abc")]
    assert proto.receive_data(masked(OP_PONG, b"xyz")) == [(PONG, b"xyz")]
    close = masked(OP_CLOSE, struct.pack("!H", 4000) + b"bye")
    assert proto.receive_data(close + masked(OP_TEXT, "ignored")) == [
        (CLOSE, (4000, "bye"))
    ]
    assert proto.state is ConnectionState.REMOTE_CLOSING
    # nothing more is reported after the Close
    assert proto.receive_data(masked(OP_TEXT, "late")) == []


def test_max_message_size_single_frame():
    proto = server_protocol(max_message_size=10)
    assert proto.receive_data(masked(OP_BINARY, b"x" * 10)) == [(MESSAGE, b"x" * 10)]
    actions = proto.receive_data(masked(OP_BINARY, b"x" * 11))
    assert actions[-1][0] == FAIL and actions[-1][1][0] == 1009
    assert proto.receive_data(masked(OP_BINARY, b"x")) == []


def test_max_message_size_checked_before_the_message_ends():
    proto = server_protocol(max_message_size=100)
    assert proto.receive_data(masked(OP_TEXT, "a" * 60, fin=False)) == []
    actions = proto.receive_data(masked(OP_CONT, "a" * 60, fin=False))
    assert actions and actions[-1][0] == FAIL and actions[-1][1][0] == 1009


def test_max_message_size_checked_while_a_frame_arrives():
    proto = server_protocol(max_message_size=1000)
    big = masked(OP_BINARY, os.urandom(1_000_000))
    # only the first 64 KiB of a 1 MB frame has arrived
    actions = proto.receive_data(big[: 64 * 1024])
    assert actions and actions[-1][0] == FAIL and actions[-1][1][0] == 1009


def test_bad_utf8_fails_1007():
    proto = server_protocol()
    actions = proto.receive_data(masked(OP_TEXT, b"\xff\xfe"))
    assert actions == [(FAIL, (1007, actions[0][1][1]))]


def test_bad_utf8_split_across_fragments_fails_1007():
    proto = server_protocol()
    euro = "\u20ac".encode()
    good = proto.receive_data(
        masked(OP_TEXT, euro[:1], fin=False) + masked(OP_CONT, euro[1:])
    )
    assert good == [(MESSAGE, "\u20ac")]
    actions = proto.receive_data(
        masked(OP_TEXT, euro[:1], fin=False) + masked(OP_CONT, b"AB")
    )
    assert actions[-1][0] == FAIL and actions[-1][1][0] == 1007


@pytest.mark.parametrize(
    "data",
    [
        frame(OP_TEXT, "unmasked from a client", mask=False),
        masked(OP_CONT, "continuation of nothing"),
        masked(3, b"reserved opcode"),
        masked(OP_PING, b"p" * 126),  # control frame too long
        masked(OP_PING, b"p", fin=False),  # fragmented control frame
        frame(OP_TEXT, b"rsv1 without extension", mask=True, rsv1=True),
    ],
    ids=["unmasked", "orphan-cont", "reserved-op", "long-ping", "frag-ping", "rsv1"],
)
def test_protocol_errors_fail_1002(data):
    proto = server_protocol()
    actions = proto.receive_data(data)
    assert actions and actions[-1][0] == FAIL and actions[-1][1][0] == 1002


def test_masked_frame_to_client_fails():
    proto = client_protocol()
    actions = proto.receive_data(frame(OP_TEXT, "masked", mask=True))
    assert actions and actions[-1][0] == FAIL and actions[-1][1][0] == 1002


def test_send_produces_frames_the_peer_understands():
    proto = client_protocol()
    peer = Connection(ConnectionType.SERVER)
    data = proto.send(TextMessage(data="hi")) + proto.send(Ping(payload=b"p"))
    peer.receive_data(data)
    events = list(peer.events())
    assert isinstance(events[0], TextMessage) and events[0].data == "hi"
    assert isinstance(events[1], Ping) and events[1].payload == b"p"
    proto.send(CloseConnection(code=1000))
    assert proto.state is ConnectionState.LOCAL_CLOSING


@pytest.mark.parametrize("side", ["server", "client"])
@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 65537, 1 << 20])
def test_send_message_bytes_equal_wsprotos(side, size):
    """The fast frame builder writes what wsproto would, and a large unmasked
    frame comes as (header with the payload's start, view of the rest), for
    bytes, bytearray and memoryview alike."""
    ours = server_protocol() if side == "server" else client_protocol()
    peer = Connection(
        ConnectionType.CLIENT if side == "server" else ConnectionType.SERVER
    )
    payload = os.urandom(size)
    buffer = bytearray(payload)
    for message in (payload, buffer, memoryview(buffer), "\u20ac" * (size // 3)):
        wire = ours.send_message(message)
        encoded = message.encode() if isinstance(message, str) else bytes(message)
        if side == "server" and len(encoded) > 65536:
            head, rest = wire
            assert isinstance(rest, memoryview)
            owner = message.obj if isinstance(message, memoryview) else message
            assert rest.obj is owner or isinstance(message, str)  # no copy
            assert len(head) == 10 + 65536
            wire = head + bytes(rest)
        else:
            assert isinstance(wire, bytes)
        if side == "server":
            kind = TextMessage if isinstance(message, str) else BytesMessage
            data = message if isinstance(message, str) else encoded
            assert wire == Connection(ConnectionType.SERVER).send(kind(data=data))
        peer.receive_data(wire)
        (event,) = peer.events()
        assert event.data == message


def test_bytes_buffered_in_wsproto_at_start_are_reported():
    # wsproto keeps bytes that followed the 101 response in its frame buffer
    # (Connection(trailing_data=...)); greenws starts by feeding b"".
    conn = Connection(ConnectionType.CLIENT, trailing_data=frame(OP_TEXT, "early"))
    proto = Protocol(conn)
    assert proto.receive_data(b"") == [(MESSAGE, "early")]


_SIZES = [0, 1, 3, 4, 7, 8, 9, 2047, 2048, 4099, 65537, 1 << 20]


@pytest.mark.parametrize("size", _SIZES)
def test_unmask_python_and_c_agree_with_plain_xor(size):
    from greenws import protocol

    data = os.urandom(size)
    key = os.urandom(4)
    expected = bytes(b ^ key[i % 4] for i, b in enumerate(data))
    assert protocol._unmask_python(data, key) == expected
    assert protocol._unmask_python(memoryview(data), key) == expected
    assert protocol._unmask(memoryview(data), key) == expected
    assert protocol._unmask(data, key) == expected
    # With a prefix (how a masked frame is built in one piece).
    assert protocol._unmask_python(data, key, b"hd") == b"hd" + expected
    assert protocol._unmask(data, key, b"hd") == b"hd" + expected


@pytest.mark.parametrize(
    "sizes", [[], [0], [1], [3, 5], [7, 1, 9, 70001], [65536] * 3, list(range(1, 12))]
)
def test_unmask_parts_equals_unmasking_the_joined_parts(sizes):
    """Held reads are unmasked in one pass, each at its offset in the key."""
    from greenws import protocol

    parts = [os.urandom(n) for n in sizes]
    key = os.urandom(4)
    expected = protocol._unmask_python(b"".join(parts), key)
    # Parts come as bytes, bytearray (merged small reads) and memoryview.
    mixed = [
        (bytearray, memoryview, bytes)[i % 3](part) for i, part in enumerate(parts)
    ]
    assert protocol._unmask_parts(parts, key) == expected
    assert protocol._unmask_parts(mixed, key) == expected
    assert protocol._unmask_parts_python(mixed, key) == expected


def _feed(proto, data, sizes):
    """Feed ``data`` in reads of the given sizes (cycled); all actions."""
    actions, pos, i = [], 0, 0
    while pos < len(data):
        n = sizes[i % len(sizes)]
        actions += proto.receive_data(data[pos:pos + n])
        pos += n
        i += 1
    return actions


@pytest.mark.parametrize("side", ["server", "client"])
@pytest.mark.parametrize(
    "sizes",
    [
        [65536],  # reads that end exactly on the frame's end
        [1000, 70001],  # mixed, ending past it: the next frame rides along
        [3],  # a trickle: merged while held
    ],
    ids=["exact", "overlapping", "trickle"],
)
def test_large_frames_arriving_in_pieces(side, sizes):
    proto = server_protocol() if side == "server" else client_protocol()
    big = os.urandom((1 << 18) + 5)
    mid = os.urandom(70000)
    mask = side == "server"
    data = frame(OP_BINARY, big, mask=mask) + frame(OP_TEXT, "after", mask=mask)
    expected = [(MESSAGE, big), (MESSAGE, "after")]
    if sizes != [3]:  # (keep the trickle short)
        data += frame(OP_BINARY, mid, mask=mask) + frame(OP_PING, b"p", mask=mask)
        expected += [(MESSAGE, mid), (PING, b"p")]
    actions = _feed(proto, data, sizes)
    assert actions[: len(expected)] == expected
    assert all(type(value) in (str, bytes) for _, value in actions)
    assert proto.wanted >= 0


def test_held_trickle_costs_no_more_than_its_bytes():
    """A peer sending a large frame a byte at a time must not make the held
    parts (one object per read) cost many times the data."""
    proto = server_protocol()
    data = frame(OP_BINARY, os.urandom(100000), mask=True)
    for i in range(50000):
        assert proto.receive_data(data[i:i + 1]) == []
    assert len(proto._held) <= 3
    assert proto.wanted == len(data) - 50000
    assert proto.receive_data(data[50000:])[0][0] == MESSAGE


def test_c_speedups_are_built_here():
    """The C unmask builds wherever a compiler is (as on CI); else pure Python."""
    import shutil

    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler: greenws runs in pure Python")
    from greenws import _speedups

    with pytest.raises(ValueError):
        _speedups.apply_mask(b"data", b"abc")
    with pytest.raises(ValueError):
        _speedups.unmask_parts([b"data"], b"abc")
    with pytest.raises(TypeError):
        _speedups.unmask_parts([b"data", 1], b"abcd")


# -- large messages in fragments -----------------------------------------------


def _wire(sent):
    """The bytes of what send_message() returned (a frame or fragments)."""
    frames = [sent] if isinstance(sent, (bytes, tuple)) else list(sent)
    out = b""
    for f in frames:
        out += f if isinstance(f, bytes) else f[0] + bytes(f[1])
    return out, len(frames)


@pytest.mark.parametrize("side", ["server", "client"])
@pytest.mark.parametrize("size", [1 << 20, (1 << 20) + 1, (3 << 20) + 5])
def test_messages_over_1mib_go_in_1mib_fragments_wsproto_reads(side, size):
    ours = server_protocol() if side == "server" else client_protocol()
    peer = Connection(
        ConnectionType.CLIENT if side == "server" else ConnectionType.SERVER
    )
    for message in (os.urandom(size), "\u20ac" * (size // 3 + 1)):
        wire, count = _wire(ours.send_message(message))
        encoded = message.encode() if isinstance(message, str) else message
        assert count == -(-len(encoded) // (1 << 20))  # 1 MiB each, 1 MiB alone
        peer.receive_data(wire)
        events = list(peer.events())
        got = "".join(e.data for e in events) if isinstance(message, str) else (
            b"".join(e.data for e in events))
        assert got == message and events[-1].message_finished


@pytest.mark.parametrize("side", ["server", "client"])
@pytest.mark.parametrize("sizes", [[1 << 20], [1000, 300001], [262144]],
                         ids=["exact", "overlapping", "read-size"])
def test_binary_fragments_on_the_fast_path_with_control_frames_between(side, sizes):
    """greenws's own large messages (1 MiB binary fragments), with pings
    between fragments, are reassembled without wsproto."""
    ours = server_protocol() if side == "server" else client_protocol()
    sender = client_protocol() if side == "server" else server_protocol()
    mask = side == "server"
    big = os.urandom((3 << 20) + 7)
    frames = list(sender.send_message(big))
    data = _wire(frames[0])[0] + frame(OP_PING, b"p1", mask=mask)
    data += _wire(frames[1])[0] + frame(OP_PONG, b"p2", mask=mask)
    data += b"".join(_wire(f)[0] for f in frames[2:])
    data += frame(OP_TEXT, "after", mask=mask)
    actions = _feed(ours, data, sizes)
    assert actions == [(PING, b"p1"), (PONG, b"p2"), (MESSAGE, big), (MESSAGE, "after")]
    assert not ours._wsproto_busy and ours._frag is None


def test_fragmented_binary_limit_and_errors():
    proto = server_protocol(max_message_size=100)
    first = masked(OP_BINARY, b"a" * 60, fin=False)
    actions = proto.receive_data(first + masked(OP_CONT, b"b" * 60))
    assert actions == [(FAIL, (1009, "message too big"))]
    proto = server_protocol()
    actions = proto.receive_data(first + masked(OP_BINARY, b"new message"))
    assert actions[-1][0] == FAIL and actions[-1][1][0] == 1002
    proto = server_protocol()
    actions = proto.receive_data(first + masked(OP_CLOSE, struct.pack("!H", 1000)))
    assert actions == [(CLOSE, (1000, ""))]


@pytest.mark.parametrize("path", ["fast", "wsproto"])
@pytest.mark.parametrize("side", ["server", "client"])
def test_send_message_text_flag(side, path):
    """text=True frames UTF-8 bytes as text without decoding them (on the
    fast path; wsproto, which frames str as text, gets them decoded);
    text=False frames a str as binary."""
    from wsproto.extensions import PerMessageDeflate

    # An extension other than greenws's own sends every frame through wsproto
    # (this one is not negotiated, so it changes nothing on the wire).
    extensions = [PerMessageDeflate()] if path == "wsproto" else []
    ours = Protocol(Connection(
        ConnectionType.SERVER if side == "server" else ConnectionType.CLIENT,
        extensions,
    ))
    peer = Connection(
        ConnectionType.CLIENT if side == "server" else ConnectionType.SERVER
    )
    wire = ours.send_message(b"caf\xc3\xa9", True)
    wire += ours.send_message(memoryview(b"\xe2\x82\xac"), True)
    wire += ours.send_message("caf\u00e9", False)
    wire += ours.send_message("plain")
    peer.receive_data(wire)
    got = [(type(e).__name__, e.data) for e in peer.events()]
    assert got == [
        ("TextMessage", "caf\u00e9"), ("TextMessage", "\u20ac"),
        ("BytesMessage", bytearray(b"caf\xc3\xa9")), ("TextMessage", "plain"),
    ]
    assert ours.extensions == []  # offered, never agreed
