"""Unit tests of greenws.session's additions for framing-less drivers (ASGI)
and for the client's end of the closing handshake.

Plain byte strings and made-up times: no socket, no thread, no loop.
"""

from wsproto.connection import Connection, ConnectionType
from wsproto.events import CloseConnection

from greenws.protocol import Protocol
from greenws.session import Session


def _session(**kw):
    return Session(None, client=False, max_queue=kw.pop("max_queue", None), **kw)


def _open_pair():
    """Open frame-level wsproto connections: (client end, server end)."""
    return Connection(ConnectionType.CLIENT), Connection(ConnectionType.SERVER)


def test_receive_message_queues_until_closing():
    session = _session()
    assert session.receive_message("a") and session.receive_message(b"b")
    assert session.queue == ["a", b"b"]
    assert session.begin_close(1000, None)
    assert session.receive_message("late")  # dropped quietly once closing
    assert session.queue == ["a", b"b"]


def test_receive_message_enforces_max_message_size_in_utf8_bytes():
    session = _session(max_message_size=4)
    assert session.receive_message("aaaa") and session.receive_message(b"1234")
    # Two characters, but six bytes in UTF-8.
    assert session.receive_message("\u20ac\u20ac") is False
    assert (session.closing, session.close_reason) == (True, 1009)
    assert session.close_message == "message too big"
    assert session.queue == ["aaaa", b"1234"]
    # Already closing: nothing more to do, the driver sends nothing.
    assert session.receive_message(b"12345") is True
    assert session.close_reason == 1009


def test_receive_message_limit_none_and_room():
    session = _session(max_queue=2)
    session.receive_message(b"x" * 100000)
    assert session.room()
    session.receive_message("y")
    assert not session.room()


def test_peer_closed_keeps_the_first_code_and_ends_reading():
    session = _session()
    session.peer_closed(4001, "bye")
    assert (session.closing, session.reading) == (True, False)
    assert (session.close_reason, session.close_message) == (4001, "bye")

    ours = _session()
    assert ours.begin_close(1000, "done")
    assert not ours.begin_close(1001, None)
    ours.peer_closed(1006, None)
    assert (ours.close_reason, ours.close_message) == (1000, "done")
    assert not ours.reading


def test_start_close_frames_what_begin_close_records():
    client, server = _open_pair()
    session = Session(Protocol(server), client=False, max_queue=None)
    frame = session.start_close(4002, "x")
    client.receive_data(frame)
    event = next(client.events())
    assert isinstance(event, CloseConnection) and event.code == 4002
    assert session.start_close(1000, None) is None  # once


def test_awaits_eof_only_for_a_client_after_both_closes():
    client_side, server_side = _open_pair()
    # greenws as the client: its Protocol wraps the wsproto client.
    session = Session(Protocol(client_side), client=True, max_queue=None)
    assert not session.awaits_eof()
    frame = session.start_close(1000, None)
    assert not session.awaits_eof()  # our Close only
    server_side.receive_data(frame)
    next(server_side.events())
    session.receive_data(server_side.send(CloseConnection(code=1000)), 0.0)
    assert session.awaits_eof()  # both Closes crossed: the server closes TCP

    client2, server2 = _open_pair()
    server_session = Session(Protocol(server2), client=False, max_queue=None)
    client2.receive_data(server_session.start_close(1000, None))
    next(client2.events())
    server_session.receive_data(client2.send(CloseConnection(code=1000)), 0.0)
    assert not server_session.reading
    assert not server_session.awaits_eof()  # a server never waits


def test_awaits_eof_false_after_a_protocol_error():
    client_side, _ = _open_pair()
    session = Session(Protocol(client_side), client=True, max_queue=None)
    # A masked frame from the server is a protocol error: we fail (1002).
    replies = session.receive_data(b"\x81\x85abcd" + b"\x00" * 5, 0.0)
    assert replies and session.close_reason == 1002 and not session.reading
    assert not session.awaits_eof()  # we close TCP ourselves
