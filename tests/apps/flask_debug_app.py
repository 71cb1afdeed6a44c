"""The README's Flask wrapping, run the way people develop: app.run(debug=True).

    flask_debug_app.py PORT

werkzeug's debugger wraps the app and turns any exception into a 500; the
WebSocket's end must not be one.
"""

import sys

from flask import Flask

import greenws

app = Flask(__name__)


@app.get("/")
def index():
    return "hello"


def echo(ws):
    for message in ws:
        ws.send(message)


app.wsgi_app = greenws.WebSocketWSGI(echo, fallback=app.wsgi_app)

if __name__ == "__main__":
    app.run("127.0.0.1", int(sys.argv[1]), debug=True, use_reloader=False)
