"""Private services get ports a restart can count on."""

from __future__ import annotations

import socket

import pytest

from alphapanda.ops.devstack import _ephemeral_start, free_port

pytestmark = pytest.mark.unit


def test_free_ports_lie_below_the_range_of_outgoing_connections() -> None:
    # No outgoing connection (nor a client's self-connect to a stopped service) can
    # take such a port while its service restarts.
    for _ in range(20):
        port = free_port()
        assert 1024 <= port < _ephemeral_start()
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))  # and it was free


def test_a_port_is_never_handed_out_twice() -> None:
    # A SASL_SSL Kafka asks for three ports before it binds any; the same port twice
    # made the broker refuse to start ("two listeners on the same port").
    ports = [free_port() for _ in range(2_000)]
    assert len(set(ports)) == len(ports)
