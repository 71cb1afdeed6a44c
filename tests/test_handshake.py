"""greenws.handshake: both roles of the opening handshake, without I/O."""

import base64
import binascii

import h11
import pytest
from conftest import OP_TEXT, accept_key, frame
from wsproto.connection import ConnectionState, ConnectionType
from wsproto.events import AcceptConnection, RejectConnection, RejectData, Request
from wsproto.handshake import H11Handshake
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from greenws import ConnectionError, HandshakeError
from greenws.compression import BoundedDeflate
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


# -- the server handshake against wsproto's own --------------------------------
#
# accept_request() validates the headers itself and writes the 101; it used
# to hand them to wsproto's H11Handshake, which re-serialized them through h11
# and parsed them back.  _wsproto_accept() is that former path, kept as the
# oracle: every request below must get the same answer from both (status,
# headers and body of a refusal; bytes, Request, subprotocol and extension
# state of an acceptance).


def _wsproto_accept(headers, target, choose_subprotocol, compression, max_size=None):
    handshake = H11Handshake(ConnectionType.SERVER)
    try:
        handshake.initiate_upgrade_connection(headers, target)
        request = next(handshake.events())
    except RemoteProtocolError as exc:
        hint = exc.event_hint
        status = hint.status_code if isinstance(hint, RejectConnection) else 400
        extra = [
            (k.decode("latin-1"), v.decode("latin-1"))
            for k, v in (hint.headers if isinstance(hint, RejectConnection) else [])
        ]
        raise HandshakeError(status, f"Bad WebSocket handshake: {exc}", extra)
    except (StopIteration, LocalProtocolError, h11.ProtocolError) as exc:
        raise HandshakeError(400, f"Bad WebSocket handshake: {exc}")
    _wsproto_check_key(headers)
    subprotocol = choose_subprotocol(request)
    if subprotocol is not None and subprotocol not in request.subprotocols:
        raise ValueError("not offered")
    extensions = [BoundedDeflate(max_size)] if compression else []
    data = handshake.send(
        AcceptConnection(subprotocol=subprotocol, extensions=extensions)
    )
    return data, handshake.connection, request, subprotocol


def _wsproto_check_key(headers):
    for name, value in headers:
        if name.lower() == b"sec-websocket-key":
            try:
                if len(base64.b64decode(value.strip(), validate=True)) == 16:
                    return
            except (binascii.Error, ValueError):
                pass
            break
    raise HandshakeError(400, "Bad WebSocket handshake: invalid Sec-WebSocket-Key")


def _outcome(accept, headers, target, choose, compression, max_size):
    try:
        data, conn, request, subprotocol = accept(
            headers, target, choose, compression, max_size
        )
    except HandshakeError as refusal:
        return (
            "refused",
            refusal.status_code,
            [(k.lower(), v) for k, v in refusal.headers],
            refusal.body,
        )
    except Exception as exc:  # noqa: BLE001 - the oracle's crashes are compared
        return ("raised", type(exc).__name__)
    state = [(type(e).__name__, vars(e)) for e in conn._proto.extensions]
    return ("accepted", data, request, subprotocol, conn.state, state)


BASE = [
    (b"host", b"example.com:8000"),
    (b"upgrade", b"websocket"),
    (b"connection", b"Upgrade"),
    (b"sec-websocket-key", KEY.encode()),
    (b"sec-websocket-version", b"13"),
]


def _with(*changes):
    """BASE with (name, value) changes: a value replaces the header of that
    name (None drops it); a name prefixed with + is appended instead."""
    headers = list(BASE)
    for name, value in changes:
        if name.startswith(b"+"):
            headers.append((name[1:], value))
            continue
        headers = [(n, v) for n, v in headers if n != name]
        if value is not None:
            headers.append((name, value))
    return headers


def _dup(name, value):
    return (b"+" + name, value)


EXT = b"sec-websocket-extensions"
PROTO = b"sec-websocket-protocol"
PMD = b"permessage-deflate; "
CASES = {
    "valid": _with(),
    "odd-case-names": [(n.upper(), v) for n, v in BASE],
    "title-case-names": [(n.title(), v) for n, v in BASE],
    "odd-case-values": _with((b"upgrade", b"WebSocket"), (b"connection", b"UPGRADE")),
    "connection-list": _with((b"connection", b"keep-alive, Upgrade")),
    "connection-list-spaces": _with((b"connection", b"keep-alive ,upgrade , x")),
    "connection-keep-alive": _with((b"connection", b"keep-alive")),
    "connection-empty": _with((b"connection", b"")),
    "connection-missing": _with((b"connection", None)),
    "connection-upgradex": _with((b"connection", b"upgradex")),
    "connection-twice-last-wins": _with(_dup(b"connection", b"close")),
    "connection-twice-upgrade-last": _with(
        (b"connection", b"close"), _dup(b"connection", b"Upgrade")
    ),
    "upgrade-missing": _with((b"upgrade", None)),
    "upgrade-empty": _with((b"upgrade", b"")),
    "upgrade-list": _with((b"upgrade", b"websocket, h2c")),
    "upgrade-other": _with((b"upgrade", b"h2c")),
    "version-missing": _with((b"sec-websocket-version", None)),
    "version-empty": _with((b"sec-websocket-version", b"")),
    "version-8": _with((b"sec-websocket-version", b"8")),
    "version-013": _with((b"sec-websocket-version", b"013")),
    "version-list": _with((b"sec-websocket-version", b"13, 8")),
    "version-twice": _with(_dup(b"sec-websocket-version", b"8")),
    "key-missing": _with((b"sec-websocket-key", None)),
    "key-empty": _with((b"sec-websocket-key", b"")),
    "key-short": _with((b"sec-websocket-key", b"AAAAAAAAAAAAAAAAAAAA")),
    "key-17-bytes": _with((b"sec-websocket-key", b"AAAAAAAAAAAAAAAAAAAAAAA=")),
    "key-not-base64": _with((b"sec-websocket-key", b"!!!!!!!!!!!!!!!!!!!!!!!!")),
    "key-no-padding": _with((b"sec-websocket-key", KEY.rstrip("=").encode())),
    "key-joined": _with((b"sec-websocket-key", (KEY + "," + KEY).encode())),
    "key-upper-name": _with(
        (b"sec-websocket-key", None), (b"SEC-WEBSOCKET-KEY", KEY.encode())
    ),
    "host-missing": _with((b"host", None)),
    "host-empty": _with((b"host", b"")),
    "host-twice": _with(_dup(b"host", b"other.example")),
    "host-ipv6": _with((b"host", b"[::1]:8000")),
    "host-idna": _with((b"host", b"xn--bcher-kva.example")),
    "host-upper-ace": _with((b"host", b"XN--bcher-kva.example")),
    "host-empty-labels": _with((b"host", b"a..b")),
    "value-nul": _with((b"user-agent", b"a\x00b")),
    "value-newline": _with((b"user-agent", b"a\nb")),
    "value-cr": _with((b"user-agent", b"a\rb")),
    "value-formfeed": _with((b"user-agent", b"a\x0cb")),
    "value-leading-space": _with((b"user-agent", b" a")),
    "value-trailing-tab": _with((b"user-agent", b"a\t")),
    "value-control": _with((b"user-agent", b"a\x01b\x7f")),
    "value-obs-text": _with((b"user-agent", b"caf\xe9")),
    "value-inner-spaces": _with((b"user-agent", b"a \t b")),
    "value-empty": _with((b"x-empty", b"")),
    "name-space": _with((b"bad name", b"x")),
    "name-empty": _with((b"", b"x")),
    "name-paren": _with((b"x(y)", b"x")),
    "name-colon": _with((b"x:y", b"x")),
    "bad-name-after-bad-value": _with((b"x-a", b"\x00"), (b"bad name", b"x")),
    "content-length-0": _with((b"content-length", b"0")),
    "content-length-list": _with((b"content-length", b"5, 5")),
    "content-length-conflict": _with((b"content-length", b"5, 6")),
    "content-length-twice": _with(
        (b"content-length", b"5"), _dup(b"content-length", b"5")
    ),
    "content-length-twice-conflict": _with(
        (b"content-length", b"5"), _dup(b"content-length", b"6")
    ),
    "content-length-alpha": _with((b"content-length", b"abc")),
    "content-length-huge": _with((b"content-length", b"1" * 21)),
    "content-length-20-digits": _with((b"content-length", b"1" * 20)),
    "transfer-encoding-chunked": _with((b"transfer-encoding", b"Chunked")),
    "transfer-encoding-gzip": _with((b"transfer-encoding", b"gzip")),
    "transfer-encoding-twice": _with(
        (b"transfer-encoding", b"chunked"), _dup(b"transfer-encoding", b"chunked")
    ),
    "many-headers": _with(*[(f"x-h{i}".encode(), b"v" * 100) for i in range(200)]),
    "protocol-one": _with((PROTO, b"chat")),
    "protocol-list": _with((PROTO, b"chat, superchat")),
    "protocol-odd-list": _with((PROTO, b"x,,chat ,y")),
    "protocol-twice": _with((PROTO, b"a"), _dup(PROTO, b"chat, b")),
    "protocol-empty": _with((PROTO, b"")),
    "protocol-case": _with((PROTO, b"Chat")),
    "ext-deflate": _with((EXT, b"permessage-deflate")),
    "ext-client-bits": _with((EXT, PMD + b"client_max_window_bits")),
    "ext-client-bits-10": _with((EXT, PMD + b"client_max_window_bits=10")),
    "ext-client-bits-8": _with((EXT, PMD + b"client_max_window_bits=8")),
    "ext-client-bits-alpha": _with((EXT, PMD + b"client_max_window_bits=x")),
    "ext-server-bits-8": _with((EXT, PMD + b"server_max_window_bits=8")),
    "ext-server-bits-10": _with((EXT, PMD + b"server_max_window_bits=10")),
    "ext-server-bits-16": _with((EXT, PMD + b"server_max_window_bits=16")),
    "ext-server-bits-quoted": _with(
        (EXT, b'permessage-deflate; server_max_window_bits="11"')
    ),
    "ext-server-bits-alpha": _with((EXT, PMD + b"server_max_window_bits=a")),
    "ext-no-takeover": _with(
        (EXT, PMD + b"server_no_context_takeover; "
              b"client_no_context_takeover")
    ),
    "ext-two-offers": _with(
        (EXT, PMD + b"server_max_window_bits=8, permessage-deflate")
    ),
    "ext-bad-then-good-offer": _with(
        (EXT, PMD + b"client_max_window_bits=x, permessage-deflate")
    ),
    "ext-twice": _with(
        (EXT, b"x-webkit-deflate-frame"), _dup(EXT, b"permessage-deflate")
    ),
    "ext-other": _with((EXT, b"x-webkit-deflate-frame")),
    "ext-case": _with((EXT, b"Permessage-Deflate")),
    "ext-spaces": _with((EXT, b"permessage-deflate ;client_max_window_bits")),
    "ext-empty": _with((EXT, b"")),
    "ext-and-protocol": _with(
        (EXT, PMD + b"client_max_window_bits"), (PROTO, b"chat")
    ),
}


def _first(request):
    return request.subprotocols[0] if request.subprotocols else None


def _chat(request):
    return "chat" if "chat" in request.subprotocols else None


CHOOSERS = {"none": no_protocol, "first": _first, "chat": _chat}
SETTINGS = [
    ("none", False, None), ("chat", True, None), ("first", True, 1000),
]


@pytest.mark.parametrize("target", ["/ws?room=1", "/"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_same_answer_as_wsproto(case, target):
    for chooser, compression, max_size in SETTINGS:
        args = (CASES[case], target, CHOOSERS[chooser], compression, max_size)
        new = _outcome(accept_request, *args)
        old = _outcome(_wsproto_accept, *args)
        assert new == old, (chooser, compression, max_size)


# Where wsproto raised (a UnicodeError out of the handshake: a 500 and a
# traceback in the hosting server), the client now gets a 400.
CRASHES = {
    "connection-non-ascii": _with((b"connection", b"Upgrade, caf\xe9")),
    "protocol-non-ascii": _with((PROTO, b"caf\xe9")),
    "ext-non-ascii": _with((EXT, PMD + b"x=\xe9")),
    "host-non-ascii": _with((b"host", b"caf\xe9.example")),
    "host-bad-ace": _with((b"host", b"xn--zz.example")),
}


@pytest.mark.parametrize("case", sorted(CRASHES))
def test_undecodable_headers_get_400(case):
    args = (CRASHES[case], "/", _first, True, None)
    assert _outcome(_wsproto_accept, *args)[0] == "raised"
    status = _outcome(accept_request, *args)[:2]
    assert status == ("refused", 400)


@pytest.mark.parametrize("target", ["", "/a b", "/caf\xe9", "/\x7f"])
def test_bad_target_refused_like_wsproto(target):
    args = (BASE, target, no_protocol, False, None)
    old = _outcome(_wsproto_accept, *args)
    new = _outcome(accept_request, *args)
    assert new[:2] == ("refused", 400)
    assert old == new or old[0] == "raised"


def test_101_bytes():
    data, _, _, _ = accept_request(
        _with((EXT, PMD + b"client_max_window_bits"), (PROTO, b"chat")),
        "/", _chat, True,
    )
    assert data == (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept_key(KEY).encode()
        + b"\r\nSec-WebSocket-Protocol: chat\r\nSec-WebSocket-Extensions: "
        b"permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
        b"server_max_window_bits=12; client_max_window_bits=12\r\n\r\n"
    )


def test_repeated_key_headers_refused():
    # wsproto checked the last key but answered with the token of all of them
    # joined, which no client accepts; now the request gets a 400.
    headers = _with(_dup(b"sec-websocket-key", b"AAAAAAAAAAAAAAAAAAAAAA=="))
    assert _outcome(_wsproto_accept, headers, "/", no_protocol, False, None)[0] == (
        "accepted"
    )
    with pytest.raises(HandshakeError) as info:
        accept_request(headers, "/", no_protocol, False)
    assert info.value.status_code == 400
    assert "Sec-WebSocket-Key" in info.value.reason_text


def test_agreed_deflate_is_fresh_per_connection():
    # Answers to an offer are remembered; each connection still gets its own
    # extension object, in the state of one that has just accepted the offer.
    headers = _with((EXT, PMD + b"client_max_window_bits=11"))
    conns = [accept_request(headers, "/", no_protocol, True, size)[1]
             for size in (None, 100, None)]
    first, second, third = (c._proto.extensions[0] for c in conns)
    assert first is not third and vars(first) == vars(third)
    assert second.max_size == 100 and first.max_size is None
    assert all(
        value is None or isinstance(value, (bool, int, str))
        for value in vars(first).values()
    )
    assert first.client_max_window_bits == 11 and first.enabled()


# -- the client handshake against wsproto's own --------------------------------
#
# ClientHandshake writes the request and reads a plain 101 itself; anything
# else goes to wsproto's H11Handshake.  _WsprotoClient is wsproto alone.

NONCE = b"AQIDBAUGBwgJCgsMDQ4PEA=="


class _WsprotoClient:
    def __init__(self, host, target, subprotocols, headers, compression):
        self.hs = H11Handshake(ConnectionType.CLIENT)
        self.status = None
        self.request_bytes = self.hs.send(Request(
            host=host, target=target, subprotocols=list(subprotocols),
            extensions=[BoundedDeflate()] if compression else [],
            extra_headers=[(k.encode("latin-1"), v.encode("latin-1"))
                           for k, v in headers],
        ))

    def receive_data(self, data):
        try:
            self.hs.receive_data(data or None)
            for event in self.hs.events():
                if isinstance(event, AcceptConnection):
                    return self.hs.connection, event.subprotocol, b""
                if isinstance(event, RejectConnection):
                    self.status = event.status_code
                    if not event.has_body:
                        raise ConnectionError(event.status_code, "handshake refused")
                elif isinstance(event, RejectData) and event.body_finished:
                    raise ConnectionError(self.status, "handshake refused")
        except RemoteProtocolError as exc:
            raise ConnectionError(self.status, f"bad handshake response: {exc}")
        if not data:
            raise ConnectionError(self.status, "server closed during the handshake")
        return None


@pytest.fixture
def fixed_nonce(monkeypatch):
    import wsproto.handshake

    import greenws.handshake

    monkeypatch.setattr(wsproto.handshake, "generate_nonce", lambda: NONCE)
    monkeypatch.setattr(greenws.handshake, "generate_nonce", lambda: NONCE)


def _client_outcome(cls, args, pieces):
    try:
        hs = cls(*args)
    except Exception as exc:  # noqa: BLE001 - the same refusal from both
        return ("raised", type(exc).__name__, str(exc))
    out = [hs.request_bytes]
    try:
        for piece in pieces:
            result = hs.receive_data(piece)
            if result is not None:
                conn, subprotocol, rest = result
                conn.receive_data(b"")
                out += ["open", subprotocol, rest, conn.state,
                        [(type(e).__name__, vars(e)) for e in conn._proto.extensions],
                        [type(e).__name__ for e in conn.events()]]
                return out
        out.append("more")
    except ConnectionError as exc:
        out += ["refused", exc.status_code, str(exc)]
    except Exception as exc:  # noqa: BLE001
        out += ["raised", type(exc).__name__]
    return out


TOKEN = accept_key(NONCE.decode())
OK_101 = (
    f"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
    f"Connection: Upgrade\r\nSec-WebSocket-Accept: {TOKEN}\r\n"
)
DEFLATE_ANSWER = (
    "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; "
    "client_no_context_takeover; server_max_window_bits=12; "
    "client_max_window_bits=12\r\n"
)
RESPONSES = {
    "101": OK_101 + "\r\n",
    "101-no-reason": OK_101.replace(" Switching Protocols", "") + "\r\n",
    "101-odd-reason": OK_101.replace("Switching Protocols", "OK\x01") + "\r\n",
    "101-frame-behind": OK_101 + "\r\n\x81\x02hi",
    "101-odd-case": OK_101.upper().replace(TOKEN.upper(), TOKEN) + "\r\n",
    "101-ows": OK_101.replace(": ", ":  \t").replace("\r\n", " \r\n") + "\r\n",
    "101-bare-lf": OK_101.replace("\r\n", "\n") + "\n",
    "101-folded": OK_101 + "X-A: a\r\n b\r\n\r\n",
    "101-http10": OK_101.replace("HTTP/1.1", "HTTP/1.0") + "\r\n",
    "101-bad-token": OK_101.replace(TOKEN, "bm9wZQ==") + "\r\n",
    "101-no-token": OK_101.replace(f"Sec-WebSocket-Accept: {TOKEN}\r\n", "") + "\r\n",
    "101-no-upgrade": OK_101.replace("Upgrade: websocket\r\n", "") + "\r\n",
    "101-upgrade-other": OK_101.replace("Upgrade: websocket", "Upgrade: h2c")
    + "\r\n",
    "101-no-connection": OK_101.replace("Connection: Upgrade\r\n", "") + "\r\n",
    "101-connection-list": OK_101.replace("Connection: Upgrade",
                                          "Connection: keep-alive, upgrade") + "\r\n",
    "101-connection-x1c": OK_101.replace("Connection: Upgrade",
                                         "Connection: upgrade\x1c") + "\r\n",
    "101-two-tokens": OK_101 + "Sec-WebSocket-Accept: bm9wZQ==\r\n\r\n",
    "101-protocol": OK_101 + "Sec-WebSocket-Protocol: chat\r\n\r\n",
    "101-protocol-other": OK_101 + "Sec-WebSocket-Protocol: zzz\r\n\r\n",
    "101-protocol-non-ascii": OK_101 + "Sec-WebSocket-Protocol: caf\xe9\r\n\r\n",
    "101-deflate": OK_101 + DEFLATE_ANSWER + "\r\n",
    "101-deflate-bare": OK_101 + "Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n",
    "101-unknown-extension": OK_101 + "Sec-WebSocket-Extensions: x-foo\r\n\r\n",
    "101-content-length": OK_101 + "Content-Length: 0\r\n\r\n",
    "101-bad-header-name": OK_101 + "Bad Name: x\r\n\r\n",
    "101-nul-value": OK_101 + "X-A: a\x00b\r\n\r\n",
    "101-huge": OK_101 + "X-A: " + "a" * 20000 + "\r\n\r\n",
    "101-cut": OK_101,
    "403": "HTTP/1.1 403 Forbidden\r\nContent-Length: 7\r\n\r\ngo away",
    "403-empty": "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n",
    "403-cut-body": "HTTP/1.1 403 Forbidden\r\nContent-Length: 70\r\n\r\ngo",
    "200-close": "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nbody",
    "100": "HTTP/1.1 100 Continue\r\n\r\n",
    "garbage": "SSH-2.0-OpenSSH_9.0\r\n\r\n",
    "empty": "",
}
REQUESTS = {
    "plain": ("example.com:8080", "/p?q=1", [], [], False),
    "deflate-protocols": ("example.com", "/", ["chat", "b"], [], True),
    "headers": ("h", "/", [], [("X-Token", "a"), ("X-Token", "b b")], True),
    "bad-header": ("h", "/", [], [("X-Token", "a\r\nX-Evil: 1")], False),
    "bad-name": ("h", "/", [], [("X Token", "a")], False),
    "second-host": ("h", "/", [], [("Host", "other")], False),
    "bad-target": ("h", "/a b", [], [], False),
    "idna-host": ("b\xfccher.example", "/", [], [], False),
    "non-ascii-protocol": ("h", "/", ["caf\xe9"], [], False),
}


@pytest.mark.parametrize("split", ["whole", "bytewise", "eof"])
@pytest.mark.parametrize("response", sorted(RESPONSES))
@pytest.mark.parametrize("request_case", sorted(REQUESTS))
def test_client_same_as_wsproto(fixed_nonce, request_case, response, split):
    data = RESPONSES[response].encode("latin-1")
    if split == "whole":
        pieces = [data]
    elif split == "bytewise":
        if len(data) > 1000:
            pytest.skip("long")
        pieces = [data[i:i + 1] for i in range(len(data))]
    else:
        pieces = [data, b""]
    args = REQUESTS[request_case]
    new = _client_outcome(ClientHandshake, args, pieces)
    old = _client_outcome(_WsprotoClient, args, pieces)
    assert new == old


@pytest.mark.parametrize("response", [
    "101", "101-no-reason", "101-frame-behind", "101-odd-case", "101-ows",
    "101-two-tokens", "101-deflate", "101-connection-list", "101-bad-token",
    "101-protocol-other",
])
def test_client_reads_plain_101s_without_wsproto(fixed_nonce, response):
    hs = ClientHandshake("h", "/", [], [], True)
    try:
        hs.receive_data(RESPONSES[response].encode())
    except ConnectionError:
        pass
    assert hs._handshake is None


def test_client_reads_a_plain_101_itself(fixed_nonce):
    hs = ClientHandshake("h", "/", ["chat"], [], True)
    assert hs._handshake is None  # the request was written without wsproto
    conn, subprotocol, _ = hs.receive_data(
        (OK_101 + "Sec-WebSocket-Protocol: chat\r\n" + DEFLATE_ANSWER + "\r\n").encode()
    )
    assert hs._handshake is None and subprotocol == "chat"
    assert conn.state is ConnectionState.OPEN and conn._proto.extensions[0].enabled()
