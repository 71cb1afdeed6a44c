"""greenws.session: the connection's policy, with byte strings and made-up times."""

from __future__ import annotations

import logging
import struct

import pytest
from wsproto import ConnectionType
from wsproto.connection import Connection
from wsproto.events import CloseConnection

from greenws.protocol import Protocol
from greenws.session import (
    KEEPALIVE_TIMEOUT,
    Session,
    State,
    check_close,
    check_ping,
    close_log_level,
    connection_state,
)


def frame(opcode, payload=b"", mask=b"\x01\x02\x03\x04"):
    """A masked client frame (the session under test is a server)."""
    head = bytes([0x80 | opcode, 0x80 | len(payload)])
    data = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + data


def session(max_queue=None):
    conn = Connection(ConnectionType.SERVER)
    return Session(Protocol(conn), client=False, max_queue=max_queue)


def test_messages_queue_in_order():
    s = session()
    assert s.receive_data(frame(1, b"a") + frame(2, b"b"), 0.0) is None
    assert s.queue == ["a", b"b"]


def test_ping_answered_with_pong_and_following_message_kept():
    s = session()
    replies = s.receive_data(frame(9, b"hi") + frame(1, b"after"), 0.0)
    assert replies == [b"\x8a\x02hi"]
    assert s.queue == ["after"]


def test_room_follows_max_queue():
    s = session(max_queue=2)
    s.receive_data(frame(1, b"1"), 0.0)
    assert s.room()
    s.receive_data(frame(1, b"2"), 0.0)
    assert not s.room()
    s.queue.pop(0)
    assert s.room()


def test_peer_close_is_echoed_and_ends_reading():
    s = session()
    payload = struct.pack("!H", 4000) + b"bye"
    replies = s.receive_data(frame(1, b"last") + frame(8, payload), 0.0)
    assert replies == [b"\x88\x05" + payload]
    assert (s.closing, s.reading) == (True, False)
    assert (s.close_reason, s.close_message) == (4000, "bye")
    assert s.queue == ["last"]


def test_our_close_first_keeps_our_code():
    s = session()
    assert s.start_close(1001, "going") == b"\x88\x07\x03\xe9going"
    assert s.start_close(1000, None) is None
    s.receive_data(frame(1, b"dropped") + frame(8, b"\x03\xe8"), 0.0)
    assert (s.close_reason, s.close_message) == (1001, "going")
    assert s.queue == [] and not s.reading


def test_protocol_error_fails_with_its_code():
    s = session()
    replies = s.receive_data(bytes([0x83, 0x80]) + b"\x00" * 4, 0.0)  # opcode 3
    assert s.close_reason == 1002 and not s.reading
    assert replies is not None and replies[0][:4] == b"\x88" + bytes(
        [len(replies[0]) - 2]
    ) + struct.pack("!H", 1002)


def test_connection_lost_is_1006_unless_closing():
    s = session()
    s.connection_lost()
    assert s.close_reason == 1006
    s = session()
    s.start_close(1000, None)
    s.connection_lost()
    assert s.close_reason == 1000


def test_keepalive_failure_is_1011_without_a_frame():
    s = session()
    assert s.keepalive_failed()
    assert (s.close_reason, s.close_message) == (1011, KEEPALIVE_TIMEOUT)
    assert not s.keepalive_failed()


def test_pong_answers_its_ping_and_earlier_ones():
    s = session()
    first = object()
    second = object()
    s.ping(b"one", first, 10.0)
    s.ping(b"two", second, 11.0)
    s.receive_data(frame(10, b"two"), 11.5)
    assert s.answered == [first, second]
    assert s.latency == pytest.approx(0.5)
    assert s.waiting_pings() == []


def test_unsolicited_pong_and_forgotten_ping():
    s = session()
    token = object()
    s.ping(b"x", token, 0.0)
    s.forget_ping(token)
    s.receive_data(frame(10, b"x"), 1.0)
    assert s.answered == [] and s.latency is None


def test_ping_payload_made_unique():
    s = session()
    s.ping(b"", "a", 0.0)
    s.ping(b"", "b", 0.0)
    assert len(s.waiting_pings()) == 2


@pytest.mark.parametrize("code", [999, 1004, 1005, 1006, 1015, 1016, 2999, 5000])
def test_check_close_refuses_reserved_codes(code):
    with pytest.raises(ValueError, match="may not be sent"):
        check_close(code, None)


@pytest.mark.parametrize("code", [None, 1000, 1003, 1007, 1014, 3000, 4999])
def test_check_close_accepts(code):
    assert check_close(code, "ok") == (code or 1000, "ok")


@pytest.mark.parametrize("code", ["going away", 1000.0, True])
def test_check_close_type(code):
    with pytest.raises(TypeError):
        check_close(code, None)


def test_check_close_message():
    with pytest.raises(ValueError, match="123"):
        check_close(1000, "é" * 62)
    with pytest.raises(ValueError):
        check_close(1000, "bye \udcff")
    with pytest.raises(TypeError):
        check_close(1000, b"bytes")
    assert check_close(1000, "é" * 61) == (1000, "é" * 61)


def test_check_ping():
    assert check_ping("é") == "é".encode()
    assert check_ping(bytearray(b"x")) == b"x"
    with pytest.raises(ValueError):
        check_ping(b"x" * 126)


def test_close_log_levels():
    assert close_log_level(1000) == logging.DEBUG
    assert close_log_level(4001) == logging.DEBUG
    assert close_log_level(1006) == logging.INFO
    assert close_log_level(1011) == logging.INFO


# -- framing-less drivers (ASGI) and the client's end of the handshake ------


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


def test_connection_state():
    assert connection_state(False, False, False) is State.CONNECTING
    assert connection_state(True, False, False) is State.OPEN
    assert connection_state(True, True, False) is State.CLOSING
    assert connection_state(True, True, True) is State.CLOSED
    assert connection_state(True, False, True) is State.CLOSED  # dropped
    # The websockets library's names and values.
    assert [(s.name, int(s)) for s in State] == [
        ("CONNECTING", 0), ("OPEN", 1), ("CLOSING", 2), ("CLOSED", 3)
    ]


def test_session_state_follows_the_closing_handshake():
    s = session()
    assert connection_state(True, s.closing, False) is State.OPEN
    s.receive_data(frame(0x8, struct.pack("!H", 1000)), 0.0)
    assert connection_state(True, s.closing, False) is State.CLOSING
    assert s.extensions == []
    assert Session(None, client=False, max_queue=None).extensions == []  # ASGI


class _ForgetsWhileListed(dict):
    """Pings whose entry for ``gone`` is taken away (a sync ping() timing
    out in another thread) right after a pong has listed them."""

    def __init__(self, gone):
        super().__init__()
        self.gone = gone

    def __iter__(self):
        keys = list(super().__iter__())
        self.pop(self.gone, None)
        return iter(keys)


def test_pong_of_a_ping_forgotten_meanwhile_answers_no_later_ping():
    s = session()
    s._pings = _ForgetsWhileListed(b"two")
    first, second, third = object(), object(), object()
    s.ping(b"one", first, 1.0)
    s.ping(b"two", second, 2.0)
    s.ping(b"three", third, 3.0)
    s.receive_data(frame(10, b"two"), 4.0)
    assert s.answered == [first]  # not third: its own pong is still to come
    assert s.waiting_pings() == [third]


def test_ping_after_our_close_went_out_gets_no_pong_and_no_error():
    """A sync close() in another thread can frame our Close between the
    session's closing test and its pong: no pong, no LocalProtocolError."""
    s = session()
    s.protocol.send(CloseConnection(code=1000))  # what that close() framed
    assert s.receive_data(frame(9, b"hi") + frame(1, b"kept"), 0.0) is None
    assert s.queue == ["kept"]


def test_the_clock_is_read_only_for_a_pong():
    s = session()
    reads = []

    def clock():
        reads.append(1)
        return 5.0

    s.receive_data(frame(1, b"a") + frame(9, b"p"), clock)
    assert reads == []
    entry = s.add_ping(b"x", "token", 1.0)
    s.ping_sent(entry, 2.0)  # it left later, behind a long message
    assert s.pong_due(entry, 10.0, 4.0) == 8.0
    assert s.ping_frame(entry)[0] == 0x89
    s.receive_data(frame(10, b"x"), clock)
    assert reads == [1]
    assert s.answered == ["token"] and entry[2] == s.latency == 3.0


def test_close_frame_built_apart_from_the_close_state():
    s = session()
    assert s.begin_close(4000, "later")
    assert s.close_frame(4000, "later")[:1] == b"\x88"
    assert s.close_frame(4000, "again") is None  # wsproto is past it
