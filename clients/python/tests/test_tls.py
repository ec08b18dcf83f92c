"""TLS from the first byte, with an `ssl.SSLContext` (certificates made by trustme)."""

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
    with pytest.raises(tern.ConnectError, match="TLS"):
        await tern.connect(b.url, connect_timeout=2)
    with pytest.raises(tern.ConnectError, match="certificate"):
        await tern.connect(b.url.replace("tern://", "tls://"), connect_timeout=2)
