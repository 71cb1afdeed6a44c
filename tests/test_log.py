"""The greenws logger: lifecycle at DEBUG/INFO, silent unless configured."""

import logging
import subprocess
import sys

import pytest
from conftest import WAIT, pick

import greenws


def test_open_and_normal_close_are_logged_at_debug(ws_pair, caplog):
    caplog.set_level(logging.DEBUG, logger="greenws")
    server, client = ws_pair()
    client.close(1000, "bye")  # returns once the server has closed TCP
    opened = [r for r in caplog.records if " open " in r.getMessage()]
    closed = [r for r in caplog.records if " closed " in r.getMessage()]
    assert len(opened) == 2 and all(r.levelno == logging.DEBUG for r in opened)
    assert any("1000 bye" in r.getMessage() for r in closed)
    assert all(r.levelno == logging.DEBUG for r in closed)


def test_abnormal_close_is_logged_at_info(ws_pair, caplog):
    caplog.set_level(logging.DEBUG, logger="greenws")
    server, client = ws_pair()
    client.sock.shutdown(2)  # vanish without a Close frame: 1006 on the server
    client.close()
    with pytest.raises(greenws.ConnectionClosed):
        server.receive(timeout=WAIT)  # returns as soon as the server saw EOF
    records = [r for r in caplog.records if "1006" in r.getMessage()]
    assert records and records[0].levelno == logging.INFO


def test_silent_by_default():
    code = (
        "import logging, greenws\n"
        "log = logging.getLogger('greenws')\n"
        "log.error('should not be printed without a handler')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0
    assert result.stderr == ""


@pytest.mark.parametrize("code", [3000, 4000, 4999])
def test_application_close_codes_are_logged_at_debug(ws_pair, role, code, caplog):
    """3000-4999 are the application's own ends, not abnormal ones."""
    caplog.set_level(logging.DEBUG, logger="greenws")
    a, b = pick(ws_pair(), role)
    a.close(code, "app done")
    with pytest.raises(greenws.ConnectionClosed):
        b.receive(timeout=WAIT)
    b.close()
    closed = [r for r in caplog.records if f"{code} app done" in r.getMessage()]
    assert len(closed) == 2  # both sides
    assert all(r.levelno == logging.DEBUG for r in closed)
