"""The udp carrier: the TLS configurations it builds (the SC's certificate; the SP's checks of
it, by CA, by pin or none), the QUIC stream limit an SP grants, and real pipes over loopback
(127.0.0.1, port 0) that authenticate or are refused for the certificate they present."""

from __future__ import annotations

import asyncio
import errno
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from qh3.quic.connection import QuicConnection

from edgerq import defaults
from edgerq.carriers.quic import carrier as quic
from edgerq.carriers.quic import gone_notice, qh3_compat
from edgerq.carriers.quic.server import QuicListener
from edgerq.config.model import ListenerConfig, PipeConfig
from edgerq.config.tls import ensure_certificate, fingerprint_der, fingerprint_file
from edgerq.errors import AuthError, ConfigError
from edgerq.pipe.events import State
from edgerq.pipe.interface import MuxPipe, Role
from edgerq.pipe.settings import PipeSettings
from tests.unit.fakes import Owner, in_loop

T = TypeVar("T")
WRONG_PIN = ":".join(["AB"] * 32)


@dataclass
class Certificate:
    cert: Path
    key: Path

    @property
    def fingerprint(self) -> str:
        return fingerprint_file(self.cert)


def make_certificate(folder: Path, name: str = "sc") -> Certificate:
    folder.mkdir(parents=True, exist_ok=True)
    pair = Certificate(folder / f"{name}-cert.pem", folder / f"{name}-key.pem")
    ensure_certificate(pair.cert, pair.key)
    return pair


@pytest.fixture
def sc_certificate(tmp_path: Path) -> Certificate:
    return make_certificate(tmp_path)


def listener_config(certificate: Certificate, port: int = 0) -> ListenerConfig:
    return ListenerConfig(
        port=port, protocol="udp", certificate=certificate.cert, private_key=certificate.key
    )


def pipe_config(port: int = 4433, hostname: str = "127.0.0.1", **checks: Any) -> PipeConfig:
    return PipeConfig(
        name="p1", hostname=hostname, port=port, services=(), protocol="udp", **checks
    )


# --- the SC's configuration ---------------------------------------------------------------


def test_the_sc_serves_the_certificate_it_is_given(sc_certificate: Certificate) -> None:
    configuration = quic.server_configuration(listener_config(sc_certificate))
    assert not configuration.is_client
    assert configuration.certificate is not None and configuration.private_key is not None
    served = fingerprint_der(configuration.certificate.public_bytes())
    assert served == sc_certificate.fingerprint


def test_the_sc_generates_its_certificate_once_when_there_is_none(tmp_path: Path) -> None:
    listener = ListenerConfig(
        port=0, protocol="udp", certificate=tmp_path / "c.pem", private_key=tmp_path / "k.pem"
    )
    quic.server_configuration(listener)
    first = (tmp_path / "c.pem").read_bytes()
    assert (tmp_path / "k.pem").stat().st_mode & 0o077 == 0  # the key is the SC's alone
    again = quic.server_configuration(listener)
    assert (tmp_path / "c.pem").read_bytes() == first  # kept: the SPs' pins stay valid
    assert again.certificate is not None
    assert fingerprint_der(again.certificate.public_bytes()) == fingerprint_file(tmp_path / "c.pem")


@pytest.mark.parametrize("missing", ["cert", "key"])
def test_half_a_key_pair_is_refused_naming_the_missing_half(
    sc_certificate: Certificate, missing: str
) -> None:
    gone = sc_certificate.cert if missing == "cert" else sc_certificate.key
    gone.unlink()
    with pytest.raises(ConfigError) as refused:
        quic.server_configuration(listener_config(sc_certificate))
    assert str(refused.value) == f"{gone}: missing (the other half of the key pair exists)"


def test_both_ends_bound_what_a_peer_may_have_in_flight(sc_certificate: Certificate) -> None:
    server = quic.server_configuration(listener_config(sc_certificate))
    client = quic.client_configuration(pipe_config(insecure=True))
    for configuration in (server, client):
        assert configuration.alpn_protocols == ["edgerq/1"]
        assert configuration.idle_timeout == quic.IDLE_TIMEOUT
        assert configuration.connection_id_length == gone_notice.CONNECTION_ID_LENGTH
        assert configuration.max_data == defaults.PIPE_BUFFER // 4
        assert configuration.max_stream_data == defaults.STREAM_WINDOW


@in_loop
async def test_a_certificate_that_is_not_pem_is_refused_naming_the_file(
    sc_certificate: Certificate,
) -> None:
    sc_certificate.cert.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match=str(sc_certificate.cert)):
        await quic.listen(listener_config(sc_certificate), Owner())


@in_loop
async def test_a_private_key_that_is_not_pem_is_refused_naming_the_file(
    sc_certificate: Certificate,
) -> None:
    sc_certificate.key.write_text("not a key\n")
    with pytest.raises(ConfigError, match=str(sc_certificate.key)):
        await quic.listen(listener_config(sc_certificate), Owner())


@in_loop
async def test_a_private_key_of_another_certificate_is_refused_naming_both(
    sc_certificate: Certificate, tmp_path: Path
) -> None:
    other_cert, other_key = tmp_path / "other-cert.pem", tmp_path / "other-key.pem"
    ensure_certificate(other_cert, other_key)
    sc_certificate.key.write_bytes(other_key.read_bytes())
    with pytest.raises(ConfigError) as refused:
        await quic.listen(listener_config(sc_certificate), Owner())
    assert str(refused.value) == (
        f"{sc_certificate.key}: this private key does not belong to {sc_certificate.cert}"
    )


@in_loop
async def test_listen_on_a_port_taken_raises_the_os_error(sc_certificate: Certificate) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        with pytest.raises(OSError) as refused:
            await quic.listen(listener_config(sc_certificate, port), Owner())
    assert refused.value.errno == errno.EADDRINUSE  # the SC daemon says "cannot listen: ..."


# --- the SP's configuration -----------------------------------------------------------------


def test_a_ca_file_makes_the_sp_verify_the_sc_against_it(sc_certificate: Certificate) -> None:
    configuration = quic.client_configuration(pipe_config(ca_file=sc_certificate.cert))
    assert configuration.is_client
    assert configuration.verify_mode == ssl.CERT_REQUIRED
    assert configuration.cafile == str(sc_certificate.cert)


@pytest.mark.parametrize(
    "checks", [{"server_fingerprint": WRONG_PIN}, {"insecure": True}], ids=["pinned", "insecure"]
)
def test_without_a_ca_file_qh3_verifies_nothing(checks: dict[str, Any]) -> None:
    # Pinned: the carrier compares the fingerprint itself once the handshake is done.
    configuration = quic.client_configuration(pipe_config(**checks))
    assert configuration.verify_mode == ssl.CERT_NONE
    assert configuration.cafile is None


def test_the_name_verified_is_the_server_name_else_the_hostname(
    sc_certificate: Certificate,
) -> None:
    plain = quic.client_configuration(pipe_config(hostname="sc.example", insecure=True))
    named = quic.client_configuration(
        pipe_config(hostname="10.0.0.1", ca_file=sc_certificate.cert, server_name="edgerq-sc")
    )
    assert (plain.server_name, named.server_name) == ("sc.example", "edgerq-sc")


def test_a_ca_file_that_does_not_exist_is_refused_before_any_dial(tmp_path: Path) -> None:
    missing = tmp_path / "sc-ca.pem"
    with pytest.raises((ConfigError, OSError), match=str(missing)):
        quic.client_configuration(pipe_config(ca_file=missing))


@pytest.mark.parametrize("streams_per_pipe", [7, 300])
@in_loop
async def test_the_sp_lets_the_sc_open_as_many_quic_streams_as_its_streams_per_pipe(
    streams_per_pipe: int,
) -> None:
    configuration = quic.client_configuration(pipe_config(insecure=True))
    owner = Owner(PipeSettings(Role.PROVIDER, None, "sp1", max_streams=streams_per_pipe))
    protocol = quic.PipeProtocol(
        QuicConnection(configuration=configuration), owner=owner, is_client=True
    )
    assert qh3_compat.stream_limit(protocol.quic.configuration) == (
        streams_per_pipe + qh3_compat.STREAM_HEADROOM
    )


# --- the datagram size an SP starts from -------------------------------------------------------


def test_a_name_that_does_not_resolve_means_qh3s_default(monkeypatch: pytest.MonkeyPatch) -> None:
    async def no_such_name(*args: object, **kwargs: object) -> list[Any]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    async def run() -> int:
        loop = asyncio.get_running_loop()
        monkeypatch.setattr(loop, "getaddrinfo", no_such_name)
        return await quic._datagram_size("sc.invalid", 4433)

    assert asyncio.run(run()) == quic.DEFAULT_DATAGRAM


def test_ipv6_routes_leave_room_for_its_larger_header(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket.socket, "connect", lambda *args: None)
    monkeypatch.setattr(socket.socket, "getsockopt", lambda *args: 1500)
    assert quic.route_datagram_size(socket.AF_INET6, ("2001:db8::1", 4433, 0, 0)) == 1452
    assert quic.route_datagram_size(socket.AF_INET, ("192.0.2.1", 4433)) == 1472


# --- real pipes on loopback --------------------------------------------------------------------


class WaitingOwner(Owner):
    """An owner whose ``authenticated`` event is set once a pipe authenticates."""

    def __init__(self, settings: PipeSettings) -> None:
        super().__init__(settings)
        self.authenticated_once = asyncio.Event()

    def pipe_authenticated(self, pipe: MuxPipe) -> None:
        super().pipe_authenticated(pipe)
        self.authenticated_once.set()


async def within(awaitable: Awaitable[T], seconds: float = 10.0) -> T:
    return await asyncio.wait_for(awaitable, seconds)


@asynccontextmanager
async def sc_listening(certificate: Certificate) -> AsyncIterator[tuple[QuicListener, Any]]:
    owner = WaitingOwner(PipeSettings(Role.CONSUMER, b"k"))
    listener = await quic.listen(listener_config(certificate), owner)
    try:
        yield listener, owner
    finally:
        listener.close()


@in_loop
async def test_a_pinned_pipe_over_loopback_authenticates_both_ends(
    sc_certificate: Certificate,
) -> None:
    async with sc_listening(sc_certificate) as (listener, sc_owner):
        host, port = listener.address
        assert host == "127.0.0.1" and port > 0
        sp_owner = WaitingOwner(PipeSettings(Role.PROVIDER, b"k", "sp1"))
        pipe = pipe_config(port, server_fingerprint=sc_certificate.fingerprint)
        async with quic.dial(pipe, sp_owner, 10) as sp_pipe:
            await within(sp_owner.authenticated_once.wait())
            await within(sc_owner.authenticated_once.wait())
            (sc_pipe,) = sc_owner.authenticated
            assert sc_pipe.name == "sp1" and sc_pipe.state is State.OPEN
            assert sc_pipe.peer.startswith("127.0.0.1:")
            assert sp_pipe.peer == f"127.0.0.1:{port}" and sp_pipe.error is None
            assert dict(listener.dropped()) == {"retry": 1}  # every dial costs one Retry
            sp_pipe.close(reason="done here")
            # The GOAWAY, or (when qh3's pacer still held it) the CONNECTION_CLOSE that
            # carries the same reason: either way the SC learns why.
            assert await within(sc_pipe.closed) in {
                "SP closed the pipe: done here",
                "QUIC connection closed: done here",
            }
    assert sp_owner.closed == ["done here"]


@in_loop
async def test_a_pipe_verifying_the_sc_by_its_ca_file_authenticates(
    sc_certificate: Certificate,
) -> None:
    async with sc_listening(sc_certificate) as (listener, sc_owner):
        sp_owner = WaitingOwner(PipeSettings(Role.PROVIDER, b"k", "sp1"))
        pipe = pipe_config(
            listener.address[1], ca_file=sc_certificate.cert, server_name="localhost"
        )
        async with quic.dial(pipe, sp_owner, 10):
            await within(sp_owner.authenticated_once.wait())
            await within(sc_owner.authenticated_once.wait())
            assert [p.name for p in sc_owner.authenticated] == ["sp1"]


@in_loop
async def test_a_pinned_pipe_to_another_certificate_closes_naming_both_fingerprints(
    sc_certificate: Certificate,
) -> None:
    async with sc_listening(sc_certificate) as (listener, sc_owner):
        sp_owner = WaitingOwner(PipeSettings(Role.PROVIDER, b"k", "sp1"))
        pipe = pipe_config(listener.address[1], server_fingerprint=WRONG_PIN)
        async with quic.dial(pipe, sp_owner, 10) as sp_pipe:
            reason = await within(sp_pipe.closed)
        assert reason == (
            "the SC's certificate does not match the pinned fingerprint: expected "
            f"{WRONG_PIN}, received {sc_certificate.fingerprint}"
        )
        assert isinstance(sp_pipe.error, AuthError) and str(sp_pipe.error) == reason
        assert not sp_pipe.authenticated and sp_owner.authenticated == []
        assert sc_owner.authenticated == []  # nothing was proven to the SC either


@in_loop
async def test_a_pipe_whose_ca_file_does_not_vouch_for_the_sc_is_refused_by_tls(
    sc_certificate: Certificate, tmp_path: Path
) -> None:
    other = make_certificate(tmp_path / "other", "other")
    async with sc_listening(sc_certificate) as (listener, sc_owner):
        sp_owner = WaitingOwner(PipeSettings(Role.PROVIDER, b"k", "sp1"))
        pipe = pipe_config(listener.address[1], ca_file=other.cert, server_name="localhost")
        with pytest.raises(ConnectionError) as refused:
            async with quic.dial(pipe, sp_owner, 10):
                pass
    assert str(refused.value) == "QUIC connection closed: the server certificate is unacceptable"
    assert sp_owner.closed == [str(refused.value)]
    assert sp_owner.authenticated == [] and sc_owner.authenticated == []
