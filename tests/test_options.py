"""``Options.validate``: checks values and nothing else (no I/O, and the user's objects are left as they were)."""

from __future__ import annotations

import ssl

import pytest
from tls_certs import Authority, Issued

import netloop


@pytest.fixture(scope="module")
def issued(tmp_path_factory: pytest.TempPathFactory) -> Issued:
    return Authority(tmp_path_factory.mktemp("pki")).issue("localhost", ["localhost", "127.0.0.1"])


def server_context(issued: Issued) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(issued.cert, issued.key)
    return ctx


def test_validate_leaves_the_tls_context_as_it_was(issued: Issued) -> None:
    ctx = server_context(issued)
    before = (ctx.options, ctx.sni_callback)
    netloop.Options(tls=ctx, proxy_protocol="v1", proxy_protocol_from=("10.0.0.0/8",)).validate()
    netloop.Options(tls={"tcp://127.0.0.1:0": ctx}).validate()
    assert (ctx.options, ctx.sni_callback) == before


def test_validate_still_refuses_bad_tls_and_networks() -> None:
    with pytest.raises(TypeError, match="tls"):
        netloop.Options(tls="cert.pem").validate()  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not a network"):
        netloop.Options(proxy_protocol_from=("10.0.0.300/8",)).validate()


def test_the_engine_prepares_the_context_when_it_starts(issued: Issued) -> None:
    ctx = server_context(issued)
    assert not ctx.options & ssl.OP_NO_RENEGOTIATION
    engine = netloop.start(netloop.EventHandler(), "tcp://127.0.0.1:0", tls=ctx)
    try:
        assert ctx.options & ssl.OP_NO_RENEGOTIATION
    finally:
        engine.stop(5)
