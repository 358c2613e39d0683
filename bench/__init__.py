"""netloop's benchmark harness: ``python -m bench`` runs every contender on every workload and reports.

Servers run as subprocesses pinned to one CPU and load generators (a small C program, wrk,
redis-benchmark) to another; server CPU time comes from /proc, so the harness is Linux-only.
"""
