"""psd's command packer (psd.connect.CommandPacker) sends the bytes redis-py's own would."""

from __future__ import annotations

from typing import Any

import pytest
from redis._parsers.encoders import Encoder
from redis.connection import HiredisRespSerializer, PythonRespSerializer
from redis.exceptions import DataError

from psd.connect import CommandPacker, client_from_url, is_cluster_url, send_call


@pytest.mark.parametrize(
    "args",
    [
        ("EVALSHA", "a" * 40, 2, "{1}:acts", "{1}:idx", b"\x93\x01\xa1d\x00", 5, "(7", 0),
        ("SET", "k", "é", 1.5, -(2**63), 2**64 - 1),
        ("SCRIPT LOAD", "return 1"),
        (b"CLIENT SETNAME", b"psd"),
        ("GET", memoryview(b"ab")),
        ("SET", "k", bytearray(b"v")),
        ("PING",),
    ],
)
def test_same_bytes_as_redis_py(args: tuple[Any, ...]) -> None:
    assert CommandPacker().pack(*args) == HiredisRespSerializer().pack(*args)


def test_what_cannot_be_sent_raises_as_before() -> None:
    for packer in (CommandPacker(), HiredisRespSerializer()):
        with pytest.raises(DataError):
            packer.pack("SET", "k", object())


def test_a_store_client_packs_with_it(redis_url: str) -> None:
    if is_cluster_url(redis_url):
        pytest.skip("a cluster's node clients are redis-py's own")
    client = client_from_url(redis_url)
    assert isinstance(client.connection_pool.connection_kwargs["command_packer"], CommandPacker)
    client.set("psd-test:packer", "é")
    assert client.get("psd-test:packer") == "é".encode()
    client.delete("psd-test:packer")


def python_packed(*args: Any) -> bytes:
    """What redis-py's own Python packer sends, with its default encoder."""
    encoder = Encoder("utf-8", "strict", False)
    return b"".join(PythonRespSerializer(6000, encoder.encode).pack(*args))


class Recorder:
    """What a redis-py connection is sent (its fallback packer redis-py's Python one)."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def pack_command(self, *args: Any) -> list[bytes]:
        return [python_packed(*args)]

    def send_packed_command(self, packed: list[bytes]) -> None:
        self.sent.append(b"".join(packed))


@pytest.mark.parametrize(
    "args",
    [
        ("FCALL", "write_call", 2, "{1}:acts", "{1}:idx", b"\x93\x01\xa1d\x00", 5, "(7", 0),
        ("SET", "k", "é", 1.5, -(2**63), 2**64 - 1),
        ("GET", memoryview(b"ab")),
    ],
)
def test_a_script_call_goes_out_as_redis_py_packs_it(args: tuple[Any, ...]) -> None:
    conn = Recorder()
    send_call(conn, args)
    assert conn.sent == [python_packed(*args)]


def test_a_script_call_that_cannot_be_sent_raises_as_before() -> None:
    with pytest.raises(DataError):
        send_call(Recorder(), ("FCALL", "f", 0, object()))
