"""nats-py over TLS against ternd: the server verified against a CA the test made, traffic
both ways, a client certificate required and presented (and refused when missing), and
`tls_handshake_first` against ternd's `--tls-handshake-first`. Certificates come from
`trustme`, made fresh for each test; none are checked in."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
import trustme
from nats.aio.client import Client
from nats.aio.msg import Msg

from conftest import run_ternd

TIMEOUT_S = 10.0


class Pki:
    """A CA, a server certificate for 127.0.0.1 and localhost, and a client one, as files."""

    def __init__(self, directory: Path) -> None:
        self.ca = trustme.CA()
        server = self.ca.issue_cert("127.0.0.1", "localhost")
        client = self.ca.issue_cert("alice@example.com")
        self.server_cert = directory / "server.pem"
        self.server_key = directory / "server.key"
        self.ca_file = directory / "ca.pem"
        server.cert_chain_pems[0].write_to_path(str(self.server_cert))
        server.private_key_pem.write_to_path(str(self.server_key))
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        self.client = client

    def server_args(self) -> list[str]:
        return ["--tls-cert", str(self.server_cert), "--tls-key", str(self.server_key)]

    def client_context(self, with_cert: bool) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        self.ca.configure_trust(ctx)
        if with_cert:
            self.client.configure_cert(ctx)
        return ctx


@pytest.fixture
def pki(tmp_path: Path) -> Iterator[Pki]:
    yield Pki(tmp_path)


async def round_trip(nc: Client) -> None:
    """A subscription, a publish and a request with its reply."""
    got: asyncio.Future[Msg] = asyncio.get_running_loop().create_future()

    async def on_message(msg: Msg) -> None:
        if not got.done():
            got.set_result(msg)

    async def on_request(msg: Msg) -> None:
        await msg.respond(b"pong")

    await nc.subscribe("greet.*", cb=on_message)
    await nc.subscribe("svc", cb=on_request)
    await nc.flush()
    await nc.publish("greet.tls", b"hello")
    msg = await asyncio.wait_for(got, TIMEOUT_S)
    assert (msg.subject, msg.data) == ("greet.tls", b"hello")
    reply = await nc.request("svc", b"ping", timeout=TIMEOUT_S)
    assert reply.data == b"pong"


async def test_nats_py_over_tls_verifies_the_server(pki: Pki) -> None:
    with run_ternd(pki.server_args()) as ternd:
        nc = await nats.connect(
            f"tls://{ternd.text}",
            tls=pki.client_context(with_cert=False),
            allow_reconnect=False,
        )
        try:
            assert nc._server_info.get("tls_required") is True
            await round_trip(nc)
        finally:
            await nc.close()


async def test_client_certificate_required(pki: Pki) -> None:
    args = [*pki.server_args(), "--tls-ca", str(pki.ca_file), "--tls-verify"]
    with run_ternd(args) as ternd:
        nc = await nats.connect(
            f"tls://{ternd.text}",
            tls=pki.client_context(with_cert=True),
            allow_reconnect=False,
        )
        try:
            await round_trip(nc)
        finally:
            await nc.close()
        with pytest.raises(Exception):  # noqa: B017 - nats-py raises the ssl error as it is
            await nats.connect(
                f"tls://{ternd.text}",
                tls=pki.client_context(with_cert=False),
                allow_reconnect=False,
                max_reconnect_attempts=0,
                connect_timeout=2,
            )


async def test_tls_handshake_first(pki: Pki) -> None:
    with run_ternd([*pki.server_args(), "--tls-handshake-first"]) as ternd:
        nc = await nats.connect(
            f"tls://{ternd.text}",
            tls=pki.client_context(with_cert=False),
            tls_handshake_first=True,
            allow_reconnect=False,
        )
        try:
            await round_trip(nc)
        finally:
            await nc.close()
