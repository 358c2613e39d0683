"""``python -m resp_server``: serve RESP until SIGINT or SIGTERM (``--help`` lists the flags)."""

from resp_server.server import main

main()
