"""free_port: the ports the platform and the tests pick for servers that bind later, often in another process."""

import json
import os
import socket
import subprocess
import sys

import pytest

from finopti import ports
from finopti.ports import free_port


@pytest.fixture
def reservations(tmp_path, monkeypatch):
    """A reservation directory of the test's own, as every process with TMPDIR=tmp_path uses it."""
    directory = tmp_path / f"finopti-ports-{os.getuid()}"
    monkeypatch.setattr(ports, "RESERVATIONS", directory)
    return directory


def offer(monkeypatch, *candidates: int) -> None:
    """The random picks offer `candidates` first, then ports counting up from the floor."""
    queue = list(candidates)
    counter = iter(range(ports.PICK_FLOOR, 65536))

    class Scripted:
        def randrange(self, low, high):
            return queue.pop(0) if queue else next(counter)

        def random(self):
            return 1.0

    monkeypatch.setattr(ports, "_random", Scripted())
    monkeypatch.setattr(ports, "_ephemeral_floor", lambda: 60000)


def test_ports_are_picked_below_the_ephemeral_range_and_never_twice(reservations):
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


def test_a_port_in_use_is_never_picked(reservations, monkeypatch):
    with socket.socket() as listener, socket.socket() as bound:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        bound.bind(("127.0.0.1", 0))
        taken = [listener.getsockname()[1], bound.getsockname()[1]]
        offer(monkeypatch, *taken)
        assert free_port() not in taken


def test_a_port_another_process_picked_is_not_picked_again(reservations, monkeypatch, tmp_path):
    """Two platforms starting at once: each process picks, then binds later; neither may get the other's."""
    script = "import json; from finopti.ports import free_port; print(json.dumps([free_port() for _ in range(20)]))"
    theirs = json.loads(subprocess.run([sys.executable, "-c", script], env={**os.environ, "TMPDIR": str(tmp_path)},
                                       capture_output=True, text=True, check=True).stdout)
    assert {int(p.name) for p in reservations.iterdir()} == set(theirs)
    offer(monkeypatch, *theirs)
    assert free_port() not in theirs


def test_an_old_reservation_is_taken_over(reservations, monkeypatch):
    old = free_port()  # as if another process had picked it long ago
    os.utime(reservations / str(old), (0, 0))
    ports._handed_out.discard(old)
    offer(monkeypatch, old)
    assert free_port() == old


def test_a_claimed_port_is_not_handed_out(reservations, monkeypatch):
    """The edge port a user chose is free until the gateway binds it; the platform's other listeners are picked
    before that and must not get it."""
    claimed = free_port()
    (reservations / str(claimed)).unlink()
    ports._handed_out.discard(claimed)
    ports.claim(claimed)
    assert (reservations / str(claimed)).exists()
    offer(monkeypatch, claimed)
    assert free_port() != claimed
