"""TLS from the first byte, with an `ssl.SSLContext` (certificates made by trustme): a
server certificate, and client certificates required by the broker (`--tls-verify`)."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import trustme

import tern
from tests.conftest import BrokerFactory


async def test_tls_connects_and_plain_tcp_to_a_tls_port_says_so(
    brokers: BrokerFactory, tmp_path: Path
) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    b = brokers(["--tls-cert", str(tmp_path / "cert.pem"), "--tls-key", str(tmp_path / "key.pem")])
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    async with tern.connect(b.url, tls=ctx) as c:
        sub = await c.subscribe("secure.>")
        await c.publish_acked("secure.x", b"sealed")
        assert (await sub.next_msg(2)).payload == b"sealed"
    # The broker says so in a plain ERROR frame before it closes.
    with pytest.raises(tern.ServerError, match="TLS required"):
        await tern.connect(b.url, connect_timeout=2)
    with pytest.raises(tern.ConnectError, match="certificate"):
        await tern.connect(b.url.replace("tern://", "tls://"), connect_timeout=2)


async def test_client_certificates_required_by_tls_verify(brokers: BrokerFactory, tmp_path: Path) -> None:
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    server.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    server.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    b = brokers(
        [
            "--tls-cert",
            str(tmp_path / "cert.pem"),
            "--tls-key",
            str(tmp_path / "key.pem"),
            "--tls-ca",
            str(tmp_path / "ca.pem"),
            "--tls-verify",
        ]
    )
    url = b.url.replace("tern://", "tls://")

    def context(client: trustme.LeafCert | None) -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        ca.configure_trust(ctx)
        if client is not None:
            client.configure_cert(ctx)
        return ctx

    # No certificate: refused by the server, and the error says what to do about it.
    with pytest.raises(tern.ConnectError) as e:
        await tern.connect(url, tls=context(None), connect_timeout=10)
    assert "client certificate" in str(e.value), e.value
    # One from a CA the server does not trust: refused, and said so.
    stranger = trustme.CA().issue_cert("mallory@example.org")
    with pytest.raises(tern.ConnectError) as e:
        await tern.connect(url, tls=context(stranger), connect_timeout=10)
    assert "refused this client's certificate" in str(e.value)
    # One from the server's CA: in, and usable.
    alice = ca.issue_cert("alice@example.org")
    async with tern.connect(url, tls=context(alice)) as c:
        sub = await c.subscribe("mtls.>")
        await c.publish_acked("mtls.x", b"it's alice")
        assert (await sub.next_msg(2)).payload == b"it's alice"
