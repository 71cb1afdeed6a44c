"""greenws.errors: simple-websocket's exceptions, plus HandshakeError."""

import pytest

import greenws
from greenws import ConnectionClosed, ConnectionError, GreenWSError, HandshakeError


def test_connection_closed_defaults():
    exc = ConnectionClosed()
    assert exc.reason == 1005 and exc.message is None
    assert isinstance(exc, GreenWSError)


def test_connection_closed_arguments():
    exc = ConnectionClosed(4000, "bye")
    assert (exc.reason, exc.message) == (4000, "bye")
    assert "4000" in str(exc)
    exc = ConnectionClosed(reason=1001, message="away")
    assert (exc.reason, exc.message) == (1001, "away")


def test_connection_error():
    assert ConnectionError().status_code is None
    exc = ConnectionError(404)
    assert exc.status_code == 404 and "404" in str(exc)
    assert ConnectionError(status_code=500).status_code == 500
    # never mistaken for the builtin (it is not an OSError)
    assert not isinstance(exc, OSError)
    assert greenws.ConnectionError is ConnectionError


def test_exceptions_are_distinct():
    assert not issubclass(ConnectionClosed, ConnectionError)
    assert issubclass(HandshakeError, ConnectionError)
    with pytest.raises(GreenWSError):
        raise ConnectionClosed()


def _call(app):
    calls = []

    def start_response(status, headers, exc_info=None):
        calls.append((status, headers))

    body = b"".join(app({}, start_response))
    assert len(calls) == 1
    return calls[0][0], dict(calls[0][1]), body


@pytest.mark.parametrize(
    "status, line", [(400, "400 Bad Request"), (403, "403 Forbidden"),
                     (426, "426 Upgrade Required"), (405, "405 Method Not Allowed"),
                     (499, "499 Error")],
)
def test_handshake_error_is_a_wsgi_app(status, line):
    exc = HandshakeError(status, "nope", [("X-Extra", "1")])
    assert exc.status_code == status
    got_status, headers, body = _call(exc)
    assert got_status == line
    assert body == b"nope\n" == exc.body
    assert headers["Content-Length"] == str(len(body))
    assert headers["X-Extra"] == "1"
    assert headers["Connection"] == "close"
