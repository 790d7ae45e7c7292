"""Mesh streams (QUIC over mesh datagrams) on an in-memory datagram network."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import random
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fake_datagram import FakeNetwork
from mesh.net import streams
from mesh.net.quic_tls import (
    INSECURE_COMMON_NAME,
    NODE_ID_OID,
    InsecureConnectionError,
    QuicTLSOptions,
    insecure_certificate,
    receptor_node_ids,
)
from mesh.net.streams import (
    DialError,
    DialTimeout,
    MeshStream,
    StreamAborted,
    StreamConnection,
    StreamError,
    StreamTuning,
    dial_stream,
    listen_stream,
)
from mesh.net.streams import connection as stream_connection
from mesh.net.streams import listener as stream_listener
from mesh.testing import wait_until_async

DEADLINE = 60.0


def run(coro, timeout: float = DEADLINE):
    """Run a test coroutine with a generous overall deadline."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def fixed(size: int):
    return lambda node: size


def listener(net: FakeNetwork, size: int = 1200, *, node: str = "b", service: str = "echo",
             **kwargs) -> streams.StreamListener:
    return listen_stream(net.endpoint(node, service), max_datagram_for=fixed(size), **kwargs)


async def dial(net: FakeNetwork, size: int = 1200, *, node: str = "b", service: str = "echo",
               **kwargs) -> MeshStream:
    return await dial_stream(net.factory("a"), node, service, local_node="a",
                             max_datagram_for=fixed(size), **kwargs)


async def read_all(stream: MeshStream) -> bytes:
    parts = []
    while True:
        data = await stream.read()
        if not data:
            return b"".join(parts)
        parts.append(data)


# -- handshake and byte-stream semantics ---------------------------------------------------


def test_handshake_and_echo():
    async def main():
        net = FakeNetwork()
        lst = listener(net)

        async def echo():
            stream = await lst.accept()
            assert (stream.remote_node, stream.remote_service) == ("a", client_service)
            while data := await stream.read():
                stream.write(data)
                await stream.drain()
            stream.write_eof()
            await stream.close()

        client_service = None
        open_endpoint = net.factory("a")

        def opener():
            nonlocal client_service
            ep = open_endpoint()
            client_service = ep.service
            return ep

        server = asyncio.create_task(echo())
        client = await dial_stream(opener, "b", "echo", local_node="a",
                                   max_datagram_for=fixed(1200))
        assert (client.remote_node, client.remote_service) == ("b", "echo")
        client.write(b"hello mesh\nsecond line\n")
        assert await client.readline() == b"hello mesh\n"
        assert await client.readexactly(6) == b"second"
        assert await client.readline() == b" line\n"
        client.write_eof()
        assert await client.read() == b""
        await client.close()
        await server
        lst.close()
        # The dial's endpoint is released after the closing period.
        await wait_until_async(lambda: ("a", client_service) not in net.endpoints)

    run(main())


def test_handshake_uses_1200_byte_initials_and_insecure_cert():
    async def main():
        net = FakeNetwork()
        lst = listener(net, 60000)
        accepted = asyncio.create_task(lst.accept())
        client = await dial(net, 60000)
        server = await accepted
        assert server.connection._quic.peer_certificates() == []
        (cert,) = client.connection._quic.peer_certificates()
        assert cert.subject.rfc4514_string() == f"CN={INSECURE_COMMON_NAME}"
        assert cert.serial_number == 1
        # Every connection starts with padded 1200-byte datagrams in both directions.
        assert set(net.first_datagram.values()) == {1200}
        await client.close()
        lst.close()

    run(main())


def test_first_byte_must_be_zero(monkeypatch):
    def open_bad_stream(self: StreamConnection) -> MeshStream:
        stream_id = self._quic.get_next_available_stream_id()
        stream = self._streams[stream_id] = MeshStream(self, stream_id)
        self._quic.send_stream_data(stream_id, b"\x01hello")
        self._schedule_flush()
        return stream

    monkeypatch.setattr(StreamConnection, "_open_client_stream", open_bad_stream)

    async def main():
        net = FakeNetwork()
        lst = listener(net)
        client = await dial(net)
        with pytest.raises(StreamAborted, match="Read Data Error") as info:
            await client.read()
        assert info.value.code == 500
        assert not lst._accepted
        lst.close()

    run(main())


def test_accept_timeout_without_stream(monkeypatch):
    def open_no_stream(self: StreamConnection) -> MeshStream:
        stream_id = self._quic.get_next_available_stream_id()
        stream = self._streams[stream_id] = MeshStream(self, stream_id)
        return stream

    monkeypatch.setattr(StreamConnection, "_open_client_stream", open_no_stream)
    monkeypatch.setattr(stream_connection, "ACCEPT_TIMEOUT", 0.3)  # where it is read

    async def main():
        net = FakeNetwork()
        lst = listener(net)
        client = await dial(net)
        with pytest.raises(StreamAborted, match="Accept Timeout") as info:
            await client.read()
        assert info.value.code == 500
        lst.close()

    run(main())


def test_half_close_semantics():
    async def main():
        net = FakeNetwork()
        lst = listener(net)

        async def server_side():
            stream = await lst.accept()
            request = await read_all(stream)  # returns at the client's FIN
            assert stream.at_eof()
            stream.write(b"got %d bytes\n" % len(request))  # still allowed after peer EOF
            stream.write(request[::-1])
            stream.write_eof()
            await stream.close()
            return request

        server = asyncio.create_task(server_side())
        client = await dial(net)
        for part in (b"abc", b"def", b"ghi"):
            client.write(part)
        client.write_eof()
        with pytest.raises(streams.StreamClosedError):
            client.write(b"late")
        assert await client.readline() == b"got 9 bytes\n"
        assert await client.read() == b"ihgfedcba"
        assert await client.read() == b""
        with pytest.raises(asyncio.IncompleteReadError):
            await client.readexactly(1)
        await client.close()
        assert await server == b"abcdefghi"
        lst.close()

    run(main())


def test_close_is_eof_and_abort_is_error():
    async def main():
        net = FakeNetwork()
        lst = listener(net)
        accepted = asyncio.create_task(lst.accept())
        first = await dial(net)
        server_first = await accepted
        first.write(b"bye")
        await first.close()  # FIN, then CONNECTION_CLOSE 0 "normal close"
        assert await read_all(server_first) == b"bye"

        accepted = asyncio.create_task(lst.accept())
        second = await dial(net)
        server_second = await accepted
        second.abort("boom")
        with pytest.raises(StreamAborted, match="boom") as info:
            await server_second.read()
        assert info.value.code == 500
        with pytest.raises(streams.StreamClosedError):
            second.write(b"x")  # we aborted it ourselves
        lst.close()

    run(main())


def test_readline_limit_and_listener_close():
    async def main():
        net = FakeNetwork()
        lst = listener(net)
        accepted = asyncio.create_task(lst.accept())
        client = await dial(net)
        server = await accepted
        client.write(b"x" * 100 + b"\nrest")
        with pytest.raises(ValueError, match="longer than 50"):
            await server.readline(limit=50)
        assert await server.readline() == b"x" * 100 + b"\n"  # nothing was lost
        lst.close()  # open connections fail: the peer must not mistake it for EOF
        with pytest.raises(StreamAborted, match="listener closed"):
            await client.read()
        with pytest.raises(streams.ListenerClosed):
            await lst.accept()

    run(main())


# -- transfers -----------------------------------------------------------------------------


async def transfer(net: FakeNetwork, size: int, payload: bytes) -> None:
    lst = listener(net, size)

    async def server_side():
        stream = await lst.accept()
        data = await read_all(stream)
        stream.write(b"%d" % len(data))
        stream.write_eof()
        await stream.close()
        return data

    server = asyncio.create_task(server_side())
    client = await dial(net, size)
    view = memoryview(payload)
    for pos in range(0, len(payload), 100_000):
        client.write(view[pos:pos + 100_000])
        await client.drain()
    client.write_eof()
    assert await read_all(client) == b"%d" % len(payload)
    await client.close()
    assert await server == payload
    lst.close()


@pytest.mark.parametrize("size", [1200, 60000])
def test_transfer_5mb_byte_exact(size):
    payload = random.Random(size).randbytes(5_000_000)
    # The network drops anything above the negotiated size, so oversize packets would stall.
    net = FakeNetwork(max_size=size)
    run(transfer(net, size, payload))
    assert net.dropped == 0
    assert set(net.first_datagram.values()) == {1200}
    if size > 1200:
        assert net.largest["a"] > 16383  # exercises the 4-byte STREAM frame length


@pytest.mark.parametrize("size, nbytes", [(1200, 1_000_000), (60000, 5_000_000)])
def test_transfer_survives_loss_and_reordering(size, nbytes):
    payload = random.Random(5).randbytes(nbytes)
    net = FakeNetwork(loss=0.05, reorder=0.05, seed=11)
    run(transfer(net, size, payload))
    assert net.dropped > 0


def test_concurrent_connections_are_demultiplexed():
    async def main():
        net = FakeNetwork()
        lst = listener(net, 60000)

        async def serve():
            while True:
                stream = await lst.accept()
                asyncio.create_task(reply(stream))

        async def reply(stream):
            data = await read_all(stream)
            stream.write(data.upper())
            await stream.close()

        async def client(i: int) -> bytes:
            stream = await dial(net, 60000)
            stream.write(b"client %d " % i * 1000)
            stream.write_eof()
            data = await read_all(stream)
            await stream.close()
            return data

        server = asyncio.create_task(serve())
        results = await asyncio.gather(*(client(i) for i in range(5)))
        assert results == [b"CLIENT %d " % i * 1000 for i in range(5)]
        server.cancel()
        lst.close()

    run(main())


def test_slow_reader_applies_backpressure():
    window = 256 * 1024
    tuning = StreamTuning(stream_window=window, connection_window=2 * window,
                          send_buffer=window)

    async def main():
        net = FakeNetwork()
        lst = listener(net, 60000, tuning=tuning)
        accepted = asyncio.create_task(lst.accept())
        client = await dial(net, 60000, tuning=tuning)
        server = await accepted
        total = 16 * window

        async def writer():
            for _ in range(16):
                client.write(b"x" * window)
                await client.drain()
            client.write_eof()

        writing = asyncio.create_task(writer())
        # The reader never reads: the sender stops at the receive window (which also
        # covered the 0x00 byte the listener consumed).
        # (on a loaded machine the writer may be a chunk behind: wait for its backlog too)
        await wait_until_async(lambda: server._buffered == window - 1 and
                               client.connection._quic.send_backlog(server.stream_id) > window)
        assert not writing.done()
        assert server._buffered == window - 1
        received = len(await read_all(server))
        assert received == total
        await writing
        await client.close()
        lst.close()

    run(main())


# -- dial failures -------------------------------------------------------------------------


def test_dial_to_missing_service_times_out():
    async def main():
        net = FakeNetwork()
        start = time.monotonic()
        with pytest.raises(DialTimeout):
            await dial(net, service="nobody", timeout=0.5)
        assert 0.4 <= time.monotonic() - start < 3.0
        assert not net.endpoints  # the ephemeral endpoint was closed

    run(main())


def test_unreachable_aborts_pending_dial():
    async def main():
        net = FakeNetwork()
        conns: list[StreamConnection] = []
        loop = asyncio.get_running_loop()

        def unknown(data, from_node, from_service, to_node, to_service):
            # What the node does on an unreachable notification for the dialed address.
            for conn in conns:
                if (conn.remote_node, conn.remote_service) == (to_node, to_service):
                    loop.call_soon(conn.abort, "service unknown")

        net.on_unknown = unknown
        start = time.monotonic()
        with pytest.raises(DialError, match="service unknown") as info:
            await dial(net, service="nobody", timeout=15, on_connection=conns.append)
        assert not isinstance(info.value, DialTimeout)
        assert time.monotonic() - start < 2.0
        assert not net.endpoints

    run(main())


# -- TLS -----------------------------------------------------------------------------------


def _write_pem(path: Path, cert: x509.Certificate, key: rsa.RSAPrivateKey) -> tuple[str, str]:
    certfile, keyfile = path / "cert.pem", path / "key.pem"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.TraditionalOpenSSL,
                                          serialization.NoEncryption()))
    return str(certfile), str(keyfile)


def test_insecure_dial_refuses_other_common_name(tmp_path):
    cert, key = insecure_certificate(common_name="secure-server")
    certfile, keyfile = _write_pem(tmp_path, cert, key)

    async def main():
        net = FakeNetwork()
        lst = listener(net, tls=QuicTLSOptions(certfile=certfile, keyfile=keyfile))
        with pytest.raises(DialError, match="insecure connection to secure service") as info:
            await dial(net)
        assert isinstance(info.value.__cause__, InsecureConnectionError)
        assert not lst._accepted
        lst.close()

    run(main())


def _node_certificates(tmp_path: Path, node_id: str,
                       ca_cn: str = "test ca") -> tuple[str, str, str]:
    """A CA and a server certificate naming ``node_id`` the way receptor cert-makereq does."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ca_cn)])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(10)
          .not_valid_before(now - datetime.timedelta(minutes=1))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    utf8 = node_id.encode()
    san = x509.SubjectAlternativeName([
        x509.DNSName("b.example"),
        x509.OtherName(NODE_ID_OID, bytes([0x0C, len(utf8)]) + utf8),
    ])
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "b")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(11)
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(san, critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    assert receptor_node_ids(cert) == [node_id]
    certfile, keyfile = _write_pem(tmp_path, cert, key)
    cafile = tmp_path / "ca.pem"
    cafile.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    return certfile, keyfile, str(cafile)


def test_user_tls_verifies_chain_and_node_id(tmp_path):
    certfile, keyfile, cafile = _node_certificates(tmp_path, "b")
    server_tls = QuicTLSOptions(certfile=certfile, keyfile=keyfile)
    client_tls = QuicTLSOptions(cafile=cafile)

    async def main():
        net = FakeNetwork()
        good = listener(net, node="b", tls=server_tls)
        accepted = asyncio.create_task(good.accept())
        stream = await dial(net, node="b", tls=client_tls)
        await accepted
        await stream.close()

        # The same certificate served by node "c" does not name "c".
        wrong = listener(net, node="c", tls=server_tls)
        with pytest.raises(DialError, match="'c'"):
            await dial(net, node="c", tls=client_tls)
        # An insecure dialer refuses a secure server too.
        with pytest.raises(DialError, match="insecure connection to secure service"):
            await dial(net, node="b")
        good.close()
        wrong.close()

    run(main())


def test_listener_requiring_client_certs_verifies_them(tmp_path):
    dirs = {name: tmp_path / name for name in "abc"}
    for path in dirs.values():
        path.mkdir()
    b_cert, b_key, b_ca = _node_certificates(dirs["b"], "b")
    a_cert, a_key, a_ca = _node_certificates(dirs["a"], "a", ca_cn="ca of a")
    c_cert, c_key, c_ca = _node_certificates(dirs["c"], "c", ca_cn="ca of c")
    client_cas = tmp_path / "client-cas.pem"
    client_cas.write_bytes(Path(a_ca).read_bytes() + Path(c_ca).read_bytes())
    server_tls = QuicTLSOptions(certfile=b_cert, keyfile=b_key, cafile=str(client_cas),
                                require_client_cert=True)

    async def refused(net: FakeNetwork, tls: QuicTLSOptions, problem: str) -> None:
        # TLS 1.3: the client is done before the server has seen its certificate, so the
        # refusal arrives as the connection closing right after the dial.
        try:
            stream = await dial(net, tls=tls)
        except DialError as exc:
            assert problem in str(exc)
            return
        with pytest.raises(StreamError, match=problem):
            await asyncio.wait_for(stream.read(), 5)

    async def main():
        net = FakeNetwork()
        lst = listener(net, tls=server_tls)
        accepted = asyncio.create_task(lst.accept())
        stream = await dial(net, tls=QuicTLSOptions(cafile=b_ca, certfile=a_cert,
                                                    keyfile=a_key))
        await asyncio.wait_for(accepted, 5)
        await stream.close()
        # No client certificate, and a certificate naming node "c" sent by node "a".
        await refused(net, QuicTLSOptions(cafile=b_ca), "client presented no certificate")
        await refused(net, QuicTLSOptions(cafile=b_ca, certfile=c_cert, keyfile=c_key),
                      "does not name node 'a'")
        assert not lst._accepted
        lst.close()

    run(main())


# -- multiplexed connections between nodes of this project (ALPN mesh-mux/1) ---------------


async def echo_server(lst: streams.StreamListener) -> None:
    """Echo every accepted stream until its EOF, then close it."""
    async def one(stream: MeshStream) -> None:
        try:
            while data := await stream.read():
                stream.write(data)
                await stream.drain()
            await stream.close()
        except StreamError:
            pass

    tasks = set()
    while True:
        stream = await lst.accept()
        task = asyncio.create_task(one(stream))
        tasks.add(task)
        task.add_done_callback(tasks.discard)


async def echo_once(stream: MeshStream, payload: bytes) -> bytes:
    stream.write(payload)
    stream.write_eof()
    data = await read_all(stream)
    await stream.close()
    return data


@contextlib.asynccontextmanager
async def echo_mesh(epoch_of=lambda node: 1):
    """An echo listener on b:echo and a stream pool for a's dials: (net, listener, pool)."""
    from mesh.net.stream_pool import StreamPool

    net = FakeNetwork()
    lst = listener(net)
    server = asyncio.create_task(echo_server(lst))
    pool = StreamPool(epoch_of)
    try:
        yield net, lst, pool
    finally:
        pool.close()
        server.cancel()
        lst.close()


def test_pooled_dials_share_one_connection():
    async def main():
        async with echo_mesh() as (net, lst, pool):
            first = await dial(net, pool=pool)
            assert first.connection.mux
            assert await echo_once(first, b"one") == b"one"
            # sequential and concurrent dials: streams on the same connection, no handshake
            second = await dial(net, pool=pool)
            assert second.connection is first.connection
            assert await echo_once(second, b"two") == b"two"
            many = await asyncio.gather(*(dial(net, pool=pool) for _ in range(20)))
            assert {s.connection for s in many} == {first.connection}
            results = await asyncio.gather(*(echo_once(s, b"n%d" % i)
                                             for i, s in enumerate(many)))
            assert results == [b"n%d" % i for i in range(20)]
            assert len(lst.connections) == 1

    run(main())


def test_concurrent_first_dials_wait_for_one_handshake():
    async def main():
        async with echo_mesh() as (net, _, pool):
            many = await asyncio.gather(*(dial(net, pool=pool) for _ in range(10)))
            assert len({s.connection for s in many}) == 1
            assert await echo_once(many[0], b"x") == b"x"

    run(main())


def test_aborting_one_stream_leaves_the_others():
    from mesh.net.stream_pool import StreamPool

    async def main():
        net = FakeNetwork()
        lst = listener(net)
        accepted: list[MeshStream] = []

        async def collect():
            while True:
                accepted.append(await lst.accept())

        server = asyncio.create_task(collect())
        pool = StreamPool(lambda node: 1)
        doomed = await dial(net, pool=pool)
        kept = await dial(net, pool=pool)
        doomed.write(b"x")
        kept.write(b"y")
        await wait_until_async(lambda: len(accepted) == 2)
        doomed.abort("given up")
        with pytest.raises(StreamAborted) as info:
            for _ in range(3):  # the "x" that arrived first, then the reset
                await accepted[0].read(10)
        assert info.value.code == 500
        assert not accepted[1].connection.ended
        assert await accepted[1].read(10) == b"y"
        accepted[1].write(b"still here")
        accepted[1].write_eof()
        assert await read_all(kept) == b"still here"
        pool.close()
        server.cancel()
        lst.close()

    run(main())


def test_without_a_pool_a_dial_is_receptors_one_stream_connection():
    async def main():
        async with echo_mesh() as (net, _, _):
            stream = await dial(net)
            assert not stream.connection.mux  # only ALPN netceptor was offered, as Go does
            with pytest.raises(streams.StreamClosedError):
                stream.connection.open_stream()
            assert await echo_once(stream, b"solo") == b"solo"
            await wait_until_async(lambda: stream.connection.ended)

    run(main())


def test_a_restarted_remote_is_not_reused():
    epoch = {"b": 1}

    async def main():
        async with echo_mesh(epoch.get) as (net, _, pool):
            first = await dial(net, pool=pool)
            assert await echo_once(first, b"1") == b"1"
            epoch["b"] = 2  # the remote node restarted: its routing epoch changed
            second = await dial(net, pool=pool)
            assert second.connection is not first.connection
            assert first.connection.ended
            assert await echo_once(second, b"2") == b"2"

    run(main())


def test_an_idle_pooled_connection_is_closed(monkeypatch):
    from mesh.net import stream_pool

    monkeypatch.setattr(stream_pool, "IDLE_CLOSE", 0.2)

    async def main():
        async with echo_mesh() as (net, _, pool):
            stream = await dial(net, pool=pool)
            assert await echo_once(stream, b"bye") == b"bye"
            await wait_until_async(lambda: stream.connection.ended)
            assert pool.connection(("b", "echo", "")) is None

    run(main())


def test_a_listener_that_speaks_only_netceptor_gets_a_connection_per_dial(monkeypatch):
    """Go Receptor's listener knows only ALPN netceptor: a pooled dial still works, one
    connection per stream, and nothing is pooled."""
    real = stream_listener.quic_configuration
    monkeypatch.setattr(stream_listener, "quic_configuration",  # the server side
                        lambda is_client, tuning, mux=True: real(is_client, tuning,
                                                                 mux=mux and is_client))

    async def main():
        async with echo_mesh() as (net, _, pool):
            first = await dial(net, pool=pool)
            assert not first.connection.mux
            assert pool.plain(("b", "echo", ""))  # later dials do not wait for each other
            assert await echo_once(first, b"go") == b"go"
            second = await dial(net, pool=pool)
            assert second.connection is not first.connection
            assert await echo_once(second, b"again") == b"again"
            await wait_until_async(lambda: first.connection.ended and second.connection.ended)
            assert pool.connection(("b", "echo", "")) is None

    run(main())


def test_reset_streams_give_back_their_connection_credit():
    """A stream the sender resets announces its final size: bytes counted against the shared
    connection window that are never delivered must be credited back, or a long-lived
    multiplexed connection would stall after enough resets."""
    from mesh.net.stream_pool import StreamPool

    async def main():
        net = FakeNetwork(loss=0.05, reorder=0.3, seed=7)  # gaps when the reset arrives
        lst = listener(net)

        async def write_then_abort():
            while True:
                stream = await lst.accept()
                stream.write(b"z" * (256 << 10))
                await asyncio.sleep(0.01)  # some of it in flight, some lost or late
                stream.abort("changed my mind")

        server = asyncio.create_task(write_then_abort())
        pool = StreamPool(lambda node: 1)
        conn = None
        for _ in range(10):
            stream = await dial(net, pool=pool)
            conn = stream.connection
            stream.write(b"go")
            with pytest.raises(StreamAborted):
                for _ in range(1000):  # bounded: the reset ends it
                    if not await stream.read():
                        break
            await stream.close()
        quic = conn._quic
        await wait_until_async(lambda: quic._mesh_consumed_total == quic._local_max_data.used)
        pool.close()
        server.cancel()
        lst.close()

    run(main())
