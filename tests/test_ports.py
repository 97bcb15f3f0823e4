"""free_port: the ports the platform and the tests pick for servers that bind later, often in another process."""

import socket

from finopti import ports
from finopti.ports import free_port


def test_ports_are_picked_below_the_ephemeral_range_and_never_twice():
    """An outgoing connection takes its source port from the kernel's ephemeral range, and could take a picked
    port before its server binds it; the OS's own pick may repeat a port it has just handed out."""
    floor = ports._ephemeral_floor()
    picked = [free_port() for _ in range(300)]
    assert len(set(picked)) == len(picked)
    if floor - ports.PICK_FLOOR >= 1000:
        assert all(ports.PICK_FLOOR <= port < floor for port in picked), picked
    for port in picked[:20]:  # each is free to bind
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_a_port_in_use_is_never_picked(monkeypatch):
    with socket.socket() as listener, socket.socket() as bound:
        listener.bind(("127.0.0.1", free_port()))
        listener.listen()
        bound.bind(("127.0.0.1", free_port()))
        taken = [listener.getsockname()[1], bound.getsockname()[1]]
        ports._handed_out.difference_update(taken)  # as if another process had picked them
        offered = iter([*taken, *taken])

        class Scripted:
            def randrange(self, low, high):
                return next(offered, low + 1)

        monkeypatch.setattr(ports, "_random", Scripted())
        monkeypatch.setattr(ports, "_ephemeral_floor", lambda: 60000)
        assert free_port() not in taken


def test_a_claimed_port_is_not_handed_out(monkeypatch):
    """The edge port a user chose is free until the gateway binds it; the platform's other listeners are picked
    before that and must not get it."""
    claimed = free_port()
    ports._handed_out.discard(claimed)
    ports.claim(claimed)
    offered = iter([claimed, claimed])

    class Scripted:
        def randrange(self, low, high):
            return next(offered, claimed + 1)

    monkeypatch.setattr(ports, "_random", Scripted())
    monkeypatch.setattr(ports, "_ephemeral_floor", lambda: 60000)
    assert free_port() != claimed
