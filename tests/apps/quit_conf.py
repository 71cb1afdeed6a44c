"""gunicorn configuration for the SIGQUIT tests: greenws's hooks, with the
watcher of ``worker.alive`` slowed down, so that only the ``worker_int`` hook
can close the WebSockets before a quitting worker exits (the watcher may
otherwise catch the worker's last 0.1 s by chance)."""

import greenws.gunicorn
from greenws.gunicorn import *  # noqa: F403 - the hooks

greenws.gunicorn.POLL_INTERVAL = 30.0
