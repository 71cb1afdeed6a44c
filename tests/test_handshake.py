"""greenws.handshake: both roles of the opening handshake, without I/O."""

import pytest
from conftest import OP_TEXT, accept_key, frame
from wsproto.connection import ConnectionState

from greenws import ConnectionError, HandshakeError
from greenws.handshake import ClientHandshake, accept_request
from greenws.protocol import MESSAGE, Protocol

KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def request_headers(**overrides):
    headers = {
        b"host": b"example.com",
        b"upgrade": b"websocket",
        b"connection": b"Upgrade",
        b"sec-websocket-key": KEY.encode(),
        b"sec-websocket-version": b"13",
    }
    for name, value in overrides.items():
        name = name.replace("_", "-").encode()
        if value is None:
            headers.pop(name, None)
        else:
            headers[name] = value.encode()
    return list(headers.items())


def first_protocol(request):
    return request.subprotocols[0] if request.subprotocols else None


def no_protocol(request):
    return None


def response_headers(data):
    head = data.decode("latin-1").split("\r\n\r\n")[0].split("\r\n")
    return head[0], {
        k.strip().lower(): v.strip()
        for k, v in (line.split(":", 1) for line in head[1:])
    }


def test_accept_valid_request():
    data, conn, request, subprotocol = accept_request(
        request_headers(), "/chat?room=1", no_protocol, False
    )
    status, headers = response_headers(data)
    assert status.startswith("HTTP/1.1 101")
    assert headers["sec-websocket-accept"] == accept_key(KEY)
    assert "sec-websocket-extensions" not in headers
    assert conn.state is ConnectionState.OPEN
    assert request.target == "/chat?room=1" and request.host == "example.com"
    assert subprotocol is None


def test_accept_subprotocol():
    data, _, request, subprotocol = accept_request(
        request_headers(sec_websocket_protocol="one, two"), "/", first_protocol, False
    )
    assert request.subprotocols == ["one", "two"]
    assert subprotocol == "one"
    assert response_headers(data)[1]["sec-websocket-protocol"] == "one"


def test_chosen_subprotocol_must_be_offered():
    with pytest.raises(ValueError):
        accept_request(
            request_headers(sec_websocket_protocol="one"), "/", lambda r: "zzz", False
        )


@pytest.mark.parametrize(
    "overrides, status",
    [
        ({"sec_websocket_key": None}, 400),
        ({"sec_websocket_version": "8"}, 426),
        ({"connection": "keep-alive"}, 400),
        ({"upgrade": None}, 400),
        ({"host": None}, 400),
    ],
    ids=["no-key", "old-version", "no-connection-upgrade", "no-upgrade", "no-host"],
)
def test_bad_requests_raise_handshake_error(overrides, status):
    with pytest.raises(HandshakeError) as info:
        accept_request(request_headers(**overrides), "/", no_protocol, False)
    assert info.value.status_code == status
    if status == 426:
        assert ("Sec-WebSocket-Version", "13") in [
            (k.title(), v) for k, v in info.value.headers
        ] or any(k.lower() == "sec-websocket-version" for k, _ in info.value.headers)


def test_accept_compression_offer():
    data, _, _, _ = accept_request(
        request_headers(
            sec_websocket_extensions="permessage-deflate; client_max_window_bits"
        ),
        "/",
        no_protocol,
        True,
    )
    ext = response_headers(data)[1]["sec-websocket-extensions"]
    assert ext.startswith("permessage-deflate")


def _respond(handshake, extra="", body=b""):
    key = [
        line.split(b":", 1)[1].strip()
        for line in handshake.request_bytes.split(b"\r\n")
        if line.lower().startswith(b"sec-websocket-key")
    ][0]
    return (
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept_key(key.decode())}\r\n"
        f"{extra}\r\n"
    ).encode() + body


def client(subprotocols=(), headers=(), compression=False, host="example.com:8080"):
    return ClientHandshake(host, "/path?q=1", list(subprotocols), list(headers),
                           compression)


def test_client_request_bytes():
    hs = client(["a", "b"], [("X-Token", "secret"), ("X-Token", "two")])
    text = hs.request_bytes.decode()
    assert text.startswith("GET /path?q=1 HTTP/1.1\r\n")
    lower = text.lower()
    assert "host: example.com:8080\r\n" in lower
    assert "upgrade: websocket" in lower
    assert "sec-websocket-version: 13" in lower
    assert "sec-websocket-protocol: a, b" in lower
    assert lower.count("x-token:") == 2
    assert "sec-websocket-extensions" not in lower


def test_client_offers_compression():
    hs = client(compression=True)
    assert b"permessage-deflate" in hs.request_bytes


def test_client_accepts_101_in_pieces():
    hs = client(["chat"])
    response = _respond(hs, "Sec-WebSocket-Protocol: chat\r\n")
    for i in range(len(response) - 1):
        assert hs.receive_data(response[i:i + 1]) is None
    conn, subprotocol, _ = hs.receive_data(response[-1:])
    assert subprotocol == "chat"
    assert conn.state is ConnectionState.OPEN


def test_client_keeps_bytes_behind_the_101():
    hs = client()
    conn, _, rest = hs.receive_data(_respond(hs, body=frame(OP_TEXT, "early")))
    # Either returned, or already inside the connection: never lost.
    events = Protocol(conn).receive_data(rest) if rest else None
    if rest:
        assert events == [(MESSAGE, "early")]
    else:
        conn.receive_data(b"")
        assert [e.data for e in conn.events()] == ["early"]


@pytest.mark.parametrize("body", [b"", b"go away"])
def test_client_refused_carries_status(body):
    hs = client()
    response = (
        f"HTTP/1.1 403 Forbidden\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
    )
    with pytest.raises(ConnectionError) as info:
        hs.receive_data(response)
    assert info.value.status_code == 403


def test_client_bad_accept_key():
    hs = client()
    response = (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Accept: bm9wZQ==\r\n\r\n"
    )
    with pytest.raises(ConnectionError):
        hs.receive_data(response)


def test_client_eof_during_handshake():
    hs = client()
    assert hs.receive_data(b"HTTP/1.1 101 Switching") is None
    with pytest.raises(ConnectionError):
        hs.receive_data(b"")


def test_client_garbage_response():
    hs = client()
    with pytest.raises(ConnectionError):
        hs.receive_data(b"SSH-2.0-OpenSSH_9.0\r\n\r\n")
