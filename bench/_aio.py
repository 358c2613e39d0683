"""The asyncio servers ``python -m bench`` compares: asyncio on netloop's loop against uvloop, and an ``async def
on_traffic`` handler against a plain one (docs/asyncio.md, "What it costs").

Every contender is a style of ``bench.servers.aio_styles`` (the servers ``bench.instructions`` counts), one loop, on
the compiled core: ``aio-protocol-*`` and ``aio-streams-*`` serve ``echo`` (the protocol ones ``http`` too),
``aio-async-handler`` and ``aio-callback-handler`` serve ``http``. No TLS.
"""

from __future__ import annotations

import importlib.util
import statistics
import sys
from collections.abc import Callable, Mapping, Sequence

from bench._stats import Sample

AIO_CONTENDERS = (
    "aio-protocol-netloop",
    "aio-protocol-uvloop",
    "aio-streams-netloop",
    "aio-streams-uvloop",
    "aio-async-handler",
    "aio-callback-handler",
)
_PROTOS = {
    "aio-protocol-netloop": ("echo", "http"),
    "aio-protocol-uvloop": ("echo", "http"),
    "aio-streams-netloop": ("echo",),
    "aio-streams-uvloop": ("echo",),
    "aio-async-handler": ("http",),
    "aio-callback-handler": ("http",),
}
LOOP_PAIRS = {
    "Protocol": ("aio-protocol-netloop", "aio-protocol-uvloop"),
    "streams": ("aio-streams-netloop", "aio-streams-uvloop"),
}
"""The same asyncio code on netloop's loop and on uvloop, by style."""
HANDLER_PAIR = ("aio-async-handler", "aio-callback-handler")
"""netloop's HTTP handler with ``async def on_traffic`` and with a plain ``def on_traffic``."""
AIO_ECHO = (*LOOP_PAIRS["Protocol"], *LOOP_PAIRS["streams"])
"""The contenders of ``aio-echo-1k``."""
AIO_HTTP = (*LOOP_PAIRS["Protocol"], *HANDLER_PAIR)
"""The contenders of ``aio-http-p1``."""


def aio_server_argv(contender: str, proto: str, host: str, port: int) -> list[str]:
    """The command line of ``contender``'s style serving ``proto`` (echo or http) on host:port."""
    if contender not in AIO_CONTENDERS:
        raise ValueError(f"{contender} is not an asyncio style")
    style = contender.removeprefix("aio-")
    module = [sys.executable, "-m", "bench.servers.aio_styles", "--style", style, "--proto", proto]
    return [*module, "--host", host, "--port", str(port)]


def aio_unavailable(contender: str, proto: str) -> str | None:
    """Why ``contender`` cannot serve ``proto`` here, or None."""
    protos = _PROTOS[contender]
    if proto not in protos:
        return f"{contender} serves {' and '.join(protos)} only"
    if contender.endswith("-uvloop") and importlib.util.find_spec("uvloop") is None:
        return "uvloop is not installed (pip install uvloop)"
    return None


def _paired(
    samples: Mapping[str, Sequence[Sample]], a: str, b: str, of: Callable[[Sample, Sample], float | None]
) -> float | None:
    """The median over the rounds both ``a`` and ``b`` ran of ``of(a's sample, b's sample)`` (None where it is
    undefined), or None without such a round. Rounds pair up in order, as in ``round_ratios``."""
    values = [of(x, y) for x, y in zip(samples.get(a, ()), samples.get(b, ()), strict=False)]
    defined = [v for v in values if v is not None]
    return statistics.median(defined) if defined else None


def _rate_ratio(x: Sample, y: Sample) -> float | None:
    return x.value / y.value if y.value > 0 else None


def _cpu_ratio(x: Sample, y: Sample) -> float | None:
    own, other = x.cpu_us_per_unit(), y.cpu_us_per_unit()
    return own["total"] / other["total"] if own and other and other["total"] > 0 else None


def _cpu_difference(x: Sample, y: Sample) -> float | None:
    own, other = x.cpu_us_per_unit(), y.cpu_us_per_unit()
    return own["total"] - other["total"] if own and other else None


def _ratios(rate: float | None, cpu: float | None, unit: str) -> str:
    parts = [f"{rate:.2f}x the rate"] if rate is not None else []
    parts += [f"{cpu:.2f}x the server CPU per {unit}"] if cpu is not None else []
    return ", ".join(parts)


def aio_notes(samples: Mapping[str, Sequence[Sample]], unit: str) -> list[str]:
    """The lines under an asyncio workload's table, each a median of the rounds' figures (contenders ran
    interleaved, so a round compares two servers under the same conditions): every style's rate and server CPU on
    netloop's loop over uvloop's, and what the ``async def on_traffic`` handler costs over the plain one."""
    notes = []
    for style, (netloop, uvloop) in LOOP_PAIRS.items():
        said = _ratios(
            _paired(samples, netloop, uvloop, _rate_ratio), _paired(samples, netloop, uvloop, _cpu_ratio), unit
        )
        if said:
            notes.append(f"{style} on netloop's loop against uvloop (median of the rounds' ratios): {said}.")
    premium = _paired(samples, *HANDLER_PAIR, _cpu_difference)
    if premium is not None:
        rate = _paired(samples, *HANDLER_PAIR, _rate_ratio)
        than = f"; {rate:.2f}x the rate" if rate is not None else ""
        notes.append(
            "`async def on_traffic` over a plain `def on_traffic` (median of the rounds' differences): "
            f"{premium:+.2f} µs of server CPU per {unit}{than}."
        )
    return notes
