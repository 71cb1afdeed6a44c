"""``python -m greenws URL``: the command-line client (see :mod:`greenws.cli`)."""

from .cli import main

raise SystemExit(main())
