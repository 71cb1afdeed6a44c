"""A greenws Client through a proxy, in a monkey-patched program.

    proxy_client.py RUNTIME URL PROXY

RUNTIME: gevent-patched | eventlet-patched.  Connects to URL through PROXY,
sends "hello", and prints one JSON line: the preset, the echo and the local
port of the client's socket (the server must see another one: the proxy's).
"""

import sys

runtime, url, proxy = sys.argv[1:4]

if runtime == "gevent-patched":
    from gevent import monkey

    monkey.patch_all()
else:
    import eventlet

    eventlet.monkey_patch()

import json  # noqa: E402

import greenws  # noqa: E402

with greenws.Client.connect(url, proxy=proxy, open_timeout=10) as ws:
    ws.send("hello")
    echo = ws.receive(timeout=10)
    local_port = ws.sock.getsockname()[1]
print(json.dumps({"preset": ws.preset.name, "echo": echo, "local_port": local_port}))
