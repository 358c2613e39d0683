"""``python -m netloop.asgi module:app``: serve an ASGI application. See ``--help`` and docs/asgi.md."""

import sys

from netloop.asgi._cli import main

if __name__ == "__main__":
    sys.exit(main())
