"""The one error the harness raises when a contender or a load generator fails."""

from __future__ import annotations


class BenchError(Exception):
    """A server, load generator or tool failed; the message says which and how, with its output's tail."""
