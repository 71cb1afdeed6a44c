"""greenws.compression: bounded permessage-deflate, negotiated with real peers."""

import os
import zlib

import pytest
from conftest import OP_BINARY, OP_TEXT, WAIT, frame, pick
from websockets.sync.client import connect as ws_connect
from websockets.sync.server import serve
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, TextMessage

import greenws
from greenws.compression import WINDOW_BITS, BoundedDeflate
from greenws.protocol import FAIL, MESSAGE, Protocol


def _params(answer):
    return {p.split("=")[0].strip(): p for p in answer.split(";")}


def test_accept_bounds_the_server_window():
    ext = BoundedDeflate()
    answer = ext.accept("permessage-deflate")
    params = _params(answer)
    assert f"server_max_window_bits={WINDOW_BITS}" in answer
    assert "server_no_context_takeover" in params
    assert "client_no_context_takeover" in params
    assert "client_max_window_bits" not in params  # not offered: cannot ask it


def test_accept_caps_client_window_when_offered():
    answer = BoundedDeflate().accept("permessage-deflate; client_max_window_bits")
    assert f"client_max_window_bits={WINDOW_BITS}" in answer
    answer = BoundedDeflate().accept("permessage-deflate; client_max_window_bits=10")
    assert "client_max_window_bits=10" in answer


def test_accept_honours_smaller_server_window_request():
    answer = BoundedDeflate().accept("permessage-deflate; server_max_window_bits=10")
    assert "server_max_window_bits=10" in answer


@pytest.mark.parametrize(
    "offer",
    [
        "permessage-deflate; server_max_window_bits=7",
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; server_max_window_bits=abc",
        "permessage-deflate; server_max_window_bits=8",  # zlib cannot do 8
    ],
)
def test_accept_declines_impossible_offers(offer):
    assert not BoundedDeflate().accept(offer)


def _pair(client_ext, server_ext):
    """Two wsproto connections that negotiated the given extensions."""
    offer = client_ext.offer()
    offer_str = "permessage-deflate" + (
        "" if offer is True else "; " + offer if isinstance(offer, str) else ""
    )
    answer = server_ext.accept(offer_str)
    assert answer
    client_ext.finalize("permessage-deflate; " + answer)
    return (
        Connection(ConnectionType.CLIENT, [client_ext]),
        Connection(ConnectionType.SERVER, [server_ext]),
    )


def test_round_trip_between_bounded_peers():
    client, server = _pair(BoundedDeflate(), BoundedDeflate())
    text = "compressible " * 10000
    blob = os.urandom(50000)
    for sender, receiver in ((client, server), (server, client)):
        wire = sender.send(TextMessage(data=text))
        wire += sender.send(BytesMessage(data=blob))
        assert len(wire) < len(text) // 10 + len(blob) + 200
        receiver.receive_data(wire)
        events = list(receiver.events())
        assert "".join(e.data for e in events if isinstance(e, TextMessage)) == text
        assert b"".join(e.data for e in events if isinstance(e, BytesMessage)) == blob


def test_idle_connection_holds_no_zlib_state():
    client, server = _pair(BoundedDeflate(), BoundedDeflate())
    server.receive_data(client.send(TextMessage(data="a" * 1000)))
    assert [e.data for e in server.events()] == ["a" * 1000]
    client.receive_data(server.send(TextMessage(data="b" * 1000)))
    assert [e.data for e in client.events()] == ["b" * 1000]
    for conn in (client, server):
        ext = conn._proto.extensions[0]
        assert ext._compressor is None and ext._decompressor is None


@pytest.mark.parametrize("role", ["server", "client"])
def test_max_size_limits_inflation(role):
    """A compression bomb fails with 1009 without inflating it whole."""
    limit = 10_000
    if role == "server":
        client, server = _pair(BoundedDeflate(), BoundedDeflate(limit))
        sender, receiver = client, server
    else:
        client, server = _pair(BoundedDeflate(limit), BoundedDeflate())
        sender, receiver = server, client
    receiver.receive_data(sender.send(BytesMessage(data=b"\0" * 1_000_000)))
    events = list(receiver.events())
    assert events and getattr(events[-1], "code", None) == 1009


# -- the protocol's fast path ----------------------------------------------------


def _protocols(limit=None, server_context_takeover=False):
    """(our client Protocol, our server Protocol, wsproto client, wsproto
    server): each of ours negotiated BoundedDeflate with a wsproto twin."""
    client_ext, server_ext = BoundedDeflate(limit), BoundedDeflate(limit)
    wclient, wserver = _pair(client_ext, server_ext)
    if server_context_takeover:
        client_ext.server_no_context_takeover = False
    twins = _pair(BoundedDeflate(limit), BoundedDeflate(limit))
    return Protocol(wclient, limit), Protocol(wserver, limit), *twins


@pytest.mark.parametrize("size", [0, 1, 200, 5000, 70_000])
def test_fast_path_sends_what_wsproto_sends(size):
    """Messages compressed by greenws's own frame builder are byte for byte
    wsproto's (server side: unmasked, so comparable)."""
    _, ours, _, twin = _protocols()
    for message in ("é" * size, os.urandom(size), b"ab" * size):
        wire = ours.send_message(message)
        if isinstance(wire, tuple):
            wire = wire[0] + bytes(wire[1])
        event = TextMessage(data=message) if isinstance(message, str) else (
            BytesMessage(data=message)
        )
        assert wire == twin.send(event)
        assert wire[0] & 0x40  # RSV1: compressed


@pytest.mark.parametrize("role", ["server", "client"])
def test_fast_path_reads_what_a_wsproto_peer_compressed(role, monkeypatch):
    client, server, wclient, wserver = _protocols()
    ours, peer = (server, wclient) if role == "server" else (client, wserver)
    messages = ["hi", "é" * 3000, b"\x00" * 20000, os.urandom(3000), "", b""]
    wire = b"".join(
        peer.send(TextMessage(data=m) if isinstance(m, str) else BytesMessage(data=m))
        for m in messages
    )

    def not_here(*args):
        raise AssertionError("went through wsproto")

    monkeypatch.setattr(Protocol, "_through_wsproto", not_here)
    assert ours.receive_data(wire) == [(MESSAGE, m) for m in messages]
    ext = ours._conn._proto.extensions[0]
    assert ext._decompressor is None and ext._compressor is None


def test_fast_path_leaves_bad_frames_to_wsproto():
    """Corrupt data (1007), bad UTF-8 inside (1007) and a message inflating
    past the limit (1009) fail as wsproto judges them."""
    for payload, code in (
        (b"\xff\xff\xff", 1007),
        (_deflate(b"\xff\xfe"), 1007),
        (_deflate(b"\0" * 50_000), 1009),
    ):
        _, server, _, _ = _protocols(limit=10_000)
        actions = server.receive_data(frame(OP_TEXT, payload, mask=True, rsv1=True))
        assert actions[-1][0] == FAIL and actions[-1][1][0] == code, actions


def test_compressed_frame_without_deflate_fails_1002():
    server = Protocol(Connection(ConnectionType.SERVER))
    actions = server.receive_data(frame(OP_TEXT, _deflate(b"x"), mask=True, rsv1=True))
    assert actions[-1][0] == FAIL and actions[-1][1][0] == 1002


def test_peer_keeping_its_context_goes_through_wsproto():
    """A server that keeps its compression context across messages (allowed
    when the client did not ask otherwise) is read by wsproto's hooks, which
    keep the matching inflater."""
    client, _, _, _ = _protocols(server_context_takeover=True)
    peer_ext = BoundedDeflate()
    peer_ext.accept("permessage-deflate")
    peer_ext.server_no_context_takeover = False
    peer = Connection(ConnectionType.SERVER, [peer_ext])
    wire = peer.send(TextMessage(data="same " * 100))
    wire += peer.send(TextMessage(data="same " * 100))
    assert client.receive_data(wire) == [(MESSAGE, "same " * 100)] * 2


def _deflate(data):
    compressor = zlib.compressobj(6, zlib.DEFLATED, -9)
    return (compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]


# -- against real peers -------------------------------------------------------


def test_server_negotiates_with_websockets_client(harness, rt):
    listener = harness.listener()
    port = listener.getsockname()[1]
    text = "compress me please " * 5000

    def peer():
        with ws_connect(f"ws://127.0.0.1:{port}/", compression="deflate",
                        open_timeout=WAIT) as ws:
            ext = ws.response.headers.get("Sec-WebSocket-Extensions", "")
            ws.send(text)
            echoed = ws.recv(timeout=WAIT)
            ws.send(b"\x01" * 100000)
            echoed_bin = ws.recv(timeout=WAIT)
            return ext, echoed, echoed_bin

    task = rt.spawn_thread(peer)
    server = harness.accept_server(listener)
    server.send(server.receive(timeout=WAIT))
    server.send(server.receive(timeout=WAIT))
    ext, echoed, echoed_bin = task.get()
    assert ext.startswith("permessage-deflate")
    assert echoed == text and echoed_bin == b"\x01" * 100000


def test_server_compression_off_with_websockets_client(harness, rt):
    listener = harness.listener()
    port = listener.getsockname()[1]

    def peer():
        with ws_connect(f"ws://127.0.0.1:{port}/", compression="deflate",
                        open_timeout=WAIT) as ws:
            ws.send("hi")
            return ws.response.headers.get("Sec-WebSocket-Extensions"), ws.recv(WAIT)

    task = rt.spawn_thread(peer)
    server = harness.accept_server(listener, compression=False)
    server.send(server.receive(timeout=WAIT))
    assert task.get() == (None, "hi")


@pytest.mark.parametrize("compression", [True, False])
def test_client_with_websockets_server(harness, rt, compression):
    seen = {}

    def handler(conn):
        seen["extensions"] = [type(e).__name__ for e in conn.protocol.extensions]
        for message in conn:
            conn.send(message)

    with serve(handler, "127.0.0.1", 0, compression="deflate") as wsserver:
        port = wsserver.socket.getsockname()[1]
        thread = rt.spawn_thread(wsserver.serve_forever)
        client = greenws.Client.connect(
            f"ws://127.0.0.1:{port}/", preset=rt.preset, compression=compression
        )
        harness.connections.append(client)
        text = "squeeze " * 20000
        client.send(text)
        assert client.receive(timeout=WAIT) == text
        client.close()
        wsserver.shutdown()
        thread.get()
    assert bool(seen["extensions"]) is compression


def test_compressed_frames_on_the_wire(harness):
    """The server really sets RSV1 and deflates with a small window."""
    server, peer = harness.raw_client(
        extra_headers=[("Sec-WebSocket-Extensions",
                        "permessage-deflate; client_max_window_bits")]
    )
    assert b"permessage-deflate" in peer.response_head
    text = "zzzz" * 10000
    server.send(text)
    fin, rsv1, opcode, payload = peer.read_frame()
    assert fin and rsv1 and opcode == OP_TEXT
    assert len(payload) < len(text) // 10
    inflated = zlib.decompressobj(-15).decompress(payload + b"\x00\x00\xff\xff")
    assert inflated.decode() == text
    # and the server inflates what the client compresses
    comp = zlib.compressobj(wbits=-WINDOW_BITS)
    body = comp.compress(b"abc" * 1000) + comp.flush(zlib.Z_SYNC_FLUSH)
    peer.send_frame(OP_BINARY, body[:-4], rsv1=True)
    assert server.receive(timeout=WAIT) == b"abc" * 1000


def test_no_compression_without_offer(harness):
    server, peer = harness.raw_client()
    assert b"sec-websocket-extensions" not in peer.response_head.lower()
    server.send("zzzz" * 1000)
    _, rsv1, _, payload = peer.read_frame()
    assert not rsv1 and payload == b"zzzz" * 1000


def test_compression_false_ignores_offer(harness):
    server, peer = harness.raw_client(
        extra_headers=[("Sec-WebSocket-Extensions", "permessage-deflate")],
        compression=False,
    )
    assert b"sec-websocket-extensions" not in peer.response_head.lower()


def test_client_offers_compression_unless_disabled(harness):
    client, peer = harness.raw_server()
    assert b"permessage-deflate" in peer.request_head.lower()
    client2, peer2 = harness.raw_server(compression=False)
    assert b"permessage-deflate" not in peer2.request_head.lower()


@pytest.mark.parametrize(
    "message, small_frame",
    [(b"a" * 5000, True), ("\u00e9" * 100_000, True), (os.urandom(70_000), False),
     (b"\0" * 1_000_000, True)],
    ids=["small", "text", "large-frame", "bomb"],
)
def test_compressed_message_over_max_message_size(ws_pair, role, message, small_frame):
    """1009 "message too big", as for an uncompressed one (wsproto's reason
    for it was "error in extension")."""
    server, client = ws_pair(
        server_kwargs={"max_message_size": 1000},
        client_kwargs={"max_message_size": 1000},
    )
    a, b = pick((server, client), role)
    assert a._protocol._deflate is not None and b._protocol._deflate is not None
    try:
        b.send(message)
    except greenws.ConnectionClosed:
        pass  # a large frame: the receiver failed before it was all sent
    # The sender sees the 1009 too when its frame had arrived whole; else the
    # receiver's socket may reset the connection first (1006).
    for ws in (a, b) if small_frame else (a,):
        with pytest.raises(greenws.ConnectionClosed) as closed:
            while ws.receive(timeout=WAIT) is not None:
                pass
        assert (closed.value.reason, closed.value.message) == (1009, "message too big")
