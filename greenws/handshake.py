"""The opening handshake, both roles, without I/O.

Server side: :func:`accept_request` checks an already-parsed request the way
wsproto's :class:`~wsproto.handshake.H11Handshake` did when handed it (through
h11), writes the ``101`` itself and creates wsproto's
:class:`~wsproto.connection.Connection` open: the WSGI server has parsed the
request already, and a second HTTP round through h11 was most of the cost of
an accept.  A bad request raises :class:`~greenws.errors.HandshakeError`.

Client side: :class:`ClientHandshake` builds the request and reads the answer
with wsproto's ``H11Handshake``; a refusal raises
:class:`~greenws.errors.ConnectionError`.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, cast

from wsproto.connection import SERVER, Connection, ConnectionType
from wsproto.events import AcceptConnection, RejectConnection, RejectData, Request
from wsproto.extensions import Extension
from wsproto.handshake import (
    H11Handshake,
    client_extensions_handshake,
    server_extensions_handshake,
)
from wsproto.utilities import (
    RemoteProtocolError,
    generate_accept_token,
    generate_nonce,
)

from .compression import BoundedDeflate
from .errors import MAX_REFUSAL_BODY, ConnectionError, HandshakeError

__all__ = ["accept_request", "ClientHandshake"]

Headers = List[Tuple[bytes, bytes]]


def _extensions(compression: bool, max_size: Optional[int]) -> List[Extension]:
    return [BoundedDeflate(max_size)] if compression else []


# What h11 accepts in a request it serializes (RFC 7230 3.2, 3.3.2, 5.3), so
# that a request refused when wsproto re-parsed it through h11 still is.
_TOKEN = re.compile(rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+")
# h11's field-value, [^\x00\s]+(?:[ \t]+[^\x00\s]+)* or empty, checked as: no
# NUL, CR, LF, VT or FF anywhere, no space or tab at either end.
_FIELD_CHARS = re.compile(rb"[^\x00\n\r\x0b\x0c]*")
_BLANKS = (b" ", b"\t")
_DIGITS = re.compile(rb"[0-9]{1,20}")
_TARGET = re.compile(r"[\x21-\x7e]+")
# Header names already seen to be tokens, with their lower-case form
# (bounded: names are the client's).
_NAMES: Dict[bytes, bytes] = {}
# The headers read_request() looks at.
_SPECIAL = frozenset([
    b"host", b"connection", b"upgrade", b"sec-websocket-key",
    b"sec-websocket-version", b"sec-websocket-extensions", b"sec-websocket-protocol",
    b"content-length", b"transfer-encoding",
])
_SWITCHING = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
_DEFLATE = "permessage-deflate"


def _bad(message: str, headers: Sequence[Tuple[str, str]] = ()) -> HandshakeError:
    return HandshakeError(400, f"Bad WebSocket handshake: {message}", headers)


def _check_key(key: bytes) -> None:
    """RFC 6455 4.2.1: the key is the base64 encoding of 16 bytes.

    wsproto accepts any value; a client that sends something else is not
    speaking RFC 6455 and gets a 400 rather than a connection.
    """
    try:
        if len(base64.b64decode(key.strip(), validate=True)) == 16:
            return
    except (binascii.Error, ValueError):
        pass
    raise _bad("invalid Sec-WebSocket-Key")


def _header_name(name: bytes) -> bytes:
    if not _TOKEN.fullmatch(name):
        raise _bad(f"Illegal header name {name!r}")
    lower = name.lower()
    if len(_NAMES) < 512:
        _NAMES[name] = lower
    return lower


def _comma_list(value: bytes, what: str) -> List[str]:
    try:
        return [piece.decode("ascii").strip() for piece in value.split(b",")]
    except UnicodeDecodeError:
        raise _bad(f"non-ASCII {what} header") from None


def _host(value: bytes) -> str:
    # The idna codec decodes plain ASCII as ASCII; skip its cost then.
    if value.isascii() and b"xn--" not in value:
        return value.decode("ascii")
    try:
        return value.decode("idna")
    except UnicodeError:
        raise _bad("invalid Host header") from None


# offers -> (Sec-WebSocket-Extensions answer, state of the BoundedDeflate
# that gave it): clients of one application send the same few offers, and
# parsing them is a good part of an accept.  Bounded: offers are the client's.
_AGREED: Dict[Tuple[str, ...], Tuple[Optional[bytes], Dict[str, Any]]] = {}


def _negotiate(
    offers: Tuple[str, ...], max_size: Optional[int]
) -> Tuple[Optional[bytes], Optional[BoundedDeflate]]:
    """wsproto's server-side extension handshake with a :class:`BoundedDeflate`:
    the answer, and the extension (enabled or not; ``None`` if not offered)."""
    if not any(_DEFLATE in offer for offer in offers):
        return None, None
    known = _AGREED.get(offers)
    if known is None:
        deflate = BoundedDeflate(max_size)
        agreed = server_extensions_handshake(offers, [deflate])
        if len(_AGREED) < 256:
            _AGREED[offers] = (agreed, dict(vars(deflate)))
        return agreed, deflate
    agreed, state = known
    # The same object as a fresh BoundedDeflate(max_size) that accepted them.
    deflate = BoundedDeflate.__new__(BoundedDeflate)
    deflate.__dict__.update(state)
    deflate.max_size = max_size
    return agreed, deflate


def read_request(headers: Headers, target: str) -> Tuple[Request, bytes]:
    """Validate an upgrade request's headers; wsproto's ``Request`` and the key.

    The checks, their order and their messages are those of h11 (header
    syntax, ``Content-Length``, ``Transfer-Encoding``, one ``Host``) and then
    of wsproto's :class:`~wsproto.handshake.H11Handshake` (``Connection:
    Upgrade``, version 13, a key, ``Upgrade: websocket``), which the server
    used to run by serializing the request through h11 and parsing it back.
    Raises :class:`HandshakeError`: 426 naming version 13 for another
    version, else 400.
    """
    connection: Optional[bytes] = None
    version: Optional[bytes] = None
    upgrade = b""
    keys: List[bytes] = []
    hosts: List[bytes] = []
    offers: List[bytes] = []
    protocols: List[bytes] = []
    extra: Headers = []
    length: Optional[bytes] = None
    chunked = False
    names = _NAMES
    for name, value in headers:
        lower = names.get(name)
        if lower is None:
            lower = _header_name(name)
        if (
            not _FIELD_CHARS.fullmatch(value)
            or value[:1] in _BLANKS
            or value[-1:] in _BLANKS
        ):
            raise _bad(f"Illegal header value {value!r}")
        if lower not in _SPECIAL:
            extra.append((lower, value))
            continue
        if lower == b"host":
            hosts.append(value)
            continue
        if lower == b"sec-websocket-extensions":
            offers.append(value)
            continue
        if lower == b"sec-websocket-protocol":
            protocols.append(value)
            continue
        if lower == b"connection":
            connection = value
        elif lower == b"sec-websocket-key":
            keys.append(value)
        elif lower == b"sec-websocket-version":
            version = value
        elif lower == b"upgrade":
            upgrade = value
        elif lower == b"content-length":
            lengths = {piece.strip() for piece in value.split(b",")}
            if len(lengths) != 1:
                raise _bad("conflicting Content-Length headers")
            value = lengths.pop()
            if not _DIGITS.fullmatch(value):
                raise _bad("bad Content-Length")
            if length is not None:
                if value != length:
                    raise _bad("conflicting Content-Length headers")
                continue  # h11 keeps only the first of equal lengths
            length = value
        else:  # transfer-encoding
            if chunked:
                raise _bad("multiple Transfer-Encoding headers")
            value = value.lower()
            if value != b"chunked":
                raise _bad("Only Transfer-Encoding: chunked is supported")
            chunked = True
        extra.append((lower, value))
    if not hosts:
        raise _bad("Missing mandatory Host: header")
    if len(hosts) > 1:
        raise _bad("Found multiple Host: headers")
    if not _TARGET.fullmatch(target):
        raise _bad("Illegal target characters")
    if connection is None or not any(
        token.lower() == "upgrade" for token in _comma_list(connection, "Connection")
    ):
        raise _bad("Missing header, 'Connection: Upgrade'")
    if version != b"13":
        raise HandshakeError(
            426 if version else 400,
            "Bad WebSocket handshake: Missing header, 'Sec-WebSocket-Version'",
            [("Sec-WebSocket-Version", "13")],
        )
    if not keys:
        raise _bad("Missing header, 'Sec-WebSocket-Key'")
    if upgrade.lower() != b"websocket":
        raise _bad("Missing header, 'Upgrade: websocket'")
    request = Request(
        host=_host(hosts[0]),
        target=target,
        extensions=[
            offer for value in offers for offer in _comma_list(value, "extensions")
        ],
        extra_headers=extra,
        subprotocols=[
            name for value in protocols for name in _comma_list(value, "protocol")
        ],
    )
    # Repeated keys are joined, as wsproto did to compute the answer: the
    # result is never a valid key.
    return request, keys[0] if len(keys) == 1 else b", ".join(keys)


def accept_request(
    headers: Headers,
    target: str,
    choose_subprotocol: Callable[[Request], Optional[str]],
    compression: bool,
    max_message_size: Optional[int] = None,
) -> Tuple[bytes, Connection, Request, Optional[str]]:
    """Validate an already-parsed upgrade request and accept it.

    Returns the bytes of the ``101`` response, the open frame-level
    connection, wsproto's ``Request`` and the chosen subprotocol.  Raises
    :class:`HandshakeError` (400 or 426) when the request is not a valid
    WebSocket upgrade.

    The response is the one wsproto would build, written directly; the
    connection is created open, with permessage-deflate when it was agreed.
    """
    request, key = read_request(headers, target)
    _check_key(key)
    subprotocol = choose_subprotocol(request)
    response = [_SWITCHING, b"Connection: Upgrade\r\nSec-WebSocket-Accept: "]
    response.append(generate_accept_token(key))
    if subprotocol is not None:
        if subprotocol not in request.subprotocols:
            raise ValueError(
                f"choose_subprotocol() returned {subprotocol!r}, which the client "
                f"did not offer ({request.subprotocols!r})"
            )
        response += (b"\r\nSec-WebSocket-Protocol: ", subprotocol.encode("ascii"))
    extensions: List[Extension] = []
    if compression and request.extensions:
        agreed, deflate = _negotiate(
            tuple(cast(List[str], request.extensions)), max_message_size
        )
        if deflate is not None:
            extensions.append(deflate)
        if agreed:
            response += (b"\r\nSec-WebSocket-Extensions: ", agreed)
    response.append(b"\r\n\r\n")
    return b"".join(response), Connection(SERVER, extensions), request, subprotocol


def _request_bytes(request: Request, key: bytes) -> Optional[bytes]:
    """The upgrade request exactly as wsproto's ``H11Handshake`` writes it
    through h11, or ``None`` when some part is not plainly valid (wsproto then
    writes it, or refuses it with h11's error)."""
    target = request.target
    if not _TARGET.fullmatch(target):
        return None
    headers = [
        (b"Host", request.host.encode("idna")),
        (b"Upgrade", b"websocket"),
        (b"Connection", b"Upgrade"),
        (b"Sec-WebSocket-Key", key),
        (b"Sec-WebSocket-Version", b"13"),
    ]
    if request.subprotocols:
        joined = ", ".join(request.subprotocols)
        if not joined.isascii():
            return None
        headers.append((b"Sec-WebSocket-Protocol", joined.encode("ascii")))
    offers = []
    for extension in cast(List[Extension], request.extensions):
        params = extension.offer()
        name = extension.name.encode("ascii")
        if not isinstance(params, bool):
            offers.append(b"%s; %s" % (name, params.encode("ascii")))
        elif params:
            offers.append(name)
    if offers:
        headers.append((b"Sec-WebSocket-Extensions", b", ".join(offers)))
    headers += request.extra_headers
    lines = [b"GET %s HTTP/1.1\r\n" % target.encode("ascii")]
    for name, value in headers:
        if name.lower() == b"host" and len(lines) > 1:
            return None  # a second Host: h11 refuses it
        if not _TOKEN.fullmatch(name) or not _valid_value(value):
            return None
        lines.append(b"%s: %s\r\n" % (name, value))
    lines.append(b"\r\n")
    return b"".join(lines)


def _valid_value(value: bytes) -> bool:
    """Whether h11 takes ``value`` as a header's value (see _FIELD_CHARS)."""
    return bool(
        _FIELD_CHARS.fullmatch(value)
        and value[:1] not in _BLANKS
        and value[-1:] not in _BLANKS
    )


# A response head as h11 reads it: up to the first blank line (h11 also takes
# bare LFs: such a head goes to wsproto).
_HEAD_END = re.compile(rb"\n\r?\n")
# "HTTP/1.1 101" and an optional reason phrase, as h11 reads a status line.
_SWITCHED = re.compile(rb"HTTP/1\.1 101(?: [^\x00-\x08\x0a-\x1f\x7f]*)?")
# name: value, OWS around the value, as h11 reads a header line.
_HEADER_LINE = re.compile(rb"([-!#$%&'*+.^_`|~0-9a-zA-Z]+):[ \t]*(.*?)[ \t]*")
# Beyond this much without a whole head, h11 gives up (its default).
_MAX_HEAD = 16 * 1024
# receive_data(): this answer is wsproto's to read.
_WSPROTO = object()


class ClientHandshake:
    """Builds the upgrade request and reads the server's answer.

    A ``101`` answer, whole, plainly formed, is read here; anything else
    (a refusal, an odd head, the server closing) goes to wsproto's
    ``H11Handshake``, which reads it as it always did.
    """

    def __init__(
        self,
        host: str,
        target: str,
        subprotocols: Sequence[str],
        headers: Sequence[Tuple[str, str]],
        compression: bool,
        max_message_size: Optional[int] = None,
    ) -> None:
        self._request = Request(
            host=host,
            target=target,
            subprotocols=list(subprotocols),
            extensions=_extensions(compression, max_message_size),
            extra_headers=[
                (k.encode("latin-1"), v.encode("latin-1")) for k, v in headers
            ],
        )
        self._key = generate_nonce()
        self._handshake: Optional[H11Handshake] = None
        self._buffer = b""
        # A refusal's status, headers and body, kept for its ConnectionError.
        self._status: Optional[int] = None
        self._headers: List[Tuple[str, str]] = []
        self._body = bytearray()
        request_bytes = _request_bytes(self._request, self._key)
        if request_bytes is None:
            self._handshake = self._wsproto()
            request_bytes = self._handshake.send(self._request)
            self._key = self._handshake._nonce or b""
        self.request_bytes: bytes = request_bytes

    def _wsproto(self) -> H11Handshake:
        """wsproto's handshake, in the state of one that sent our request."""
        handshake = H11Handshake(ConnectionType.CLIENT)
        handshake.send(self._request)
        # It made up a key of its own; the request that went out had ours.
        handshake._nonce = self._key
        return handshake

    def receive_data(
        self, data: bytes
    ) -> Optional[Tuple[Connection, Optional[str], bytes]]:
        """Feed response bytes.

        Returns ``None`` while more are needed, then the open connection, the
        subprotocol the server chose and any bytes that followed the response
        (already handed to the connection).  A refusal raises
        :class:`ConnectionError` with the server's HTTP status, headers and
        body (once the body is complete, or its first 64 KiB arrived).
        """
        if self._handshake is None:
            if data:
                self._buffer += data
                result = self._switched()
                if result is not _WSPROTO:
                    return cast(
                        Optional[Tuple[Connection, Optional[str], bytes]], result
                    )
            # From here on wsproto reads, starting with what came so far.
            self._handshake = self._wsproto()
            buffered, self._buffer = self._buffer, b""
            if buffered and not data:
                result = self._feed(buffered)
                if result is not None:
                    return result
            elif buffered:
                return self._feed(buffered)
        return self._feed(data)

    def _switched(self) -> object:
        """The open connection if the buffer holds a plain ``101``; ``None``
        for more bytes; ``_WSPROTO`` when it is for wsproto to read."""
        buffer = self._buffer
        end = _HEAD_END.search(buffer)
        if end is None:
            if len(buffer) > _MAX_HEAD or not buffer.startswith(b"HTTP/1.1 101"[
                : len(buffer)
            ]):
                return _WSPROTO
            return None
        lines = buffer[: end.start() - 1].split(b"\r\n")
        if end.start() == 0 or buffer[end.start() - 1] != 13 or any(
            b"\r" in line or b"\n" in line for line in lines
        ):
            return _WSPROTO  # bare LFs or CRs
        if not _SWITCHED.fullmatch(lines[0]):
            return _WSPROTO
        fields: Dict[bytes, bytes] = {}
        for line in lines[1:]:
            match = _HEADER_LINE.fullmatch(line)
            if match is None or not _valid_value(match[2]):
                return _WSPROTO
            name = match[1].lower()
            if name in (b"content-length", b"transfer-encoding") or (
                not match[2].isascii()
            ):
                return _WSPROTO
            fields[name] = match[2]  # the last one counts, as in wsproto
        # wsproto's checks (H11Handshake._establish_client_connection).
        connection = fields.get(b"connection")
        if connection is None or not any(
            token.lower() == "upgrade"
            for token in _comma_list(connection, "Connection")
        ):
            raise ConnectionError(
                None, "bad handshake response: Missing header, 'Connection: Upgrade'"
            )
        if fields.get(b"upgrade", b"").lower() != b"websocket":
            raise ConnectionError(
                None, "bad handshake response: Missing header, 'Upgrade: websocket'"
            )
        if fields.get(b"sec-websocket-accept") != generate_accept_token(self._key):
            raise ConnectionError(None, "bad handshake response: Bad accept token")
        subprotocol: Optional[str] = None
        if b"sec-websocket-protocol" in fields:
            subprotocol = fields[b"sec-websocket-protocol"].decode("ascii")
            if subprotocol not in self._request.subprotocols:
                raise ConnectionError(
                    None,
                    f"bad handshake response: unrecognized subprotocol {subprotocol}",
                )
        accepts = fields.get(b"sec-websocket-extensions")
        try:
            extensions = client_extensions_handshake(
                _comma_list(accepts, "extensions") if accepts is not None else [],
                cast(List[Extension], self._request.extensions),
            )
        except RemoteProtocolError as exc:
            raise ConnectionError(None, f"bad handshake response: {exc}")
        conn = Connection(ConnectionType.CLIENT, extensions, buffer[end.end():])
        return conn, subprotocol, b""

    def _feed(
        self, data: bytes
    ) -> Optional[Tuple[Connection, Optional[str], bytes]]:
        assert self._handshake is not None
        try:
            self._handshake.receive_data(data or None)
            for event in self._handshake.events():
                if isinstance(event, AcceptConnection):
                    conn = self._handshake.connection
                    assert conn is not None
                    return conn, event.subprotocol, b""
                if isinstance(event, RejectConnection):
                    self._status = event.status_code
                    self._headers = [
                        (k.decode("latin-1"), v.decode("latin-1"))
                        for k, v in event.headers
                    ]
                    if not event.has_body:
                        raise self._refusal("handshake refused")
                elif isinstance(event, RejectData):
                    self._body += event.data
                    if event.body_finished or len(self._body) >= MAX_REFUSAL_BODY:
                        raise self._refusal("handshake refused")
        except RemoteProtocolError as exc:
            raise self._refusal(f"bad handshake response: {exc}")
        if not data:
            raise self._refusal("server closed during the handshake")
        return None

    def _refusal(self, message: str) -> ConnectionError:
        return ConnectionError(
            self._status, message, self._headers, bytes(self._body[:MAX_REFUSAL_BODY])
        )
