"""Servers that compete with netloop's examples in the benchmark (asyncio and uvloop transports)."""
