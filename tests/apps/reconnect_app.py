"""The app of tests/test_reconnect.py: a server to restart under a client.

GREENWS_TEST_STATUS=N in the environment: every request is refused with the
HTTP status N (an overloaded server, one restarting behind a proxy, or one
that refuses this client).  Otherwise each WebSocket is first sent this
process's pid; then a message "close N" closes with code N, anything else is
echoed -- and on the path /bye, the first message echoed is followed by a
1000 close.
"""

import os

import greenws

STATUS = os.environ.get("GREENWS_TEST_STATUS")


def handler(ws):
    ws.send(str(os.getpid()))
    for message in ws:
        if message.startswith("close "):
            ws.close(int(message.split()[1]))
            return
        ws.send(message)
        if ws.environ.get("PATH_INFO") == "/bye":
            ws.close(1000)
            return


_websocket = greenws.WebSocketWSGI(handler)


def app(environ, start_response):
    if STATUS:
        start_response(f"{STATUS} Refused", [("Content-Length", "0")])
        return [b""]
    return _websocket(environ, start_response)
