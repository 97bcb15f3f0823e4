"""Restart what has stopped doing its job: a supervisord event listener, woken every 5 s (TICK_5).

supervisord restarts a process that exits; a process that hangs (SIGSTOPped, deadlocked, a gateway whose
listener could not bind) never exits, so `finopti status` would call it unhealthy for ever. Each tick reads the
platform's status (the same `platform_status` the CLI shows); a component unhealthy for RESTART_AFTER seconds in a
row is sent SIGCONT and SIGTERM (a stopped process cannot act on TERM), SIGKILL if it is still there KILL_AFTER
seconds later, and supervisord starts it again. A component that is unhealthy again after a restart waits twice
as long before the next (up to 8x): a cause outside it (a port taken, a full disk) is not a restart loop.

Services are judged by the gateway's health checks: while the gateway itself does not answer, their health is
unknown ("starting"), so a hung gateway restarts only the gateway."""

import logging
import os
import sys
import time
import xmlrpc.client
from collections.abc import Callable
from dataclasses import dataclass, field

from finopti.errors import FinoptiError
from finopti.paths import StateDir

RESTART_AFTER = 30.0  # as a Kubernetes liveness probe by default (3 failures, 10 s apart)
KILL_AFTER = 10.0
MAX_BACKOFF = 8

log = logging.getLogger("finopti.watchdog")


@dataclass
class Watchdog:
    """The decisions, apart from supervisord: `tick(states)` with {component: (state, pid)} returns the signals to
    send, as (component, signal name)."""

    restart_after: float = RESTART_AFTER
    kill_after: float = KILL_AFTER
    clock: Callable[[], float] = time.monotonic
    unhealthy_since: dict[str, float] = field(default_factory=dict)
    restarts: dict[str, int] = field(default_factory=dict)  # in a row, without being healthy in between
    stopping: dict[str, tuple[int, float]] = field(default_factory=dict)  # component -> (pid, TERM sent at)

    def tick(self, states: dict[str, tuple[str, int | None]]) -> list[tuple[str, str]]:
        now, signals = self.clock(), []
        for name, (state, pid) in states.items():
            if name in self.stopping:
                old_pid, sent = self.stopping[name]
                if pid != old_pid:
                    del self.stopping[name]  # gone; supervisord started it again
                elif now - sent >= self.kill_after:
                    signals.append((name, "KILL"))
                    self.stopping[name] = (old_pid, now)
                continue
            if state == "healthy":
                self.restarts.pop(name, None)
            if state != "unhealthy" or pid is None:
                self.unhealthy_since.pop(name, None)
                continue
            since = self.unhealthy_since.setdefault(name, now)
            if now - since >= self.restart_after * min(2 ** self.restarts.get(name, 0), MAX_BACKOFF):
                signals += [(name, "CONT"), (name, "TERM")]
                self.stopping[name] = (pid, now)
                self.restarts[name] = self.restarts.get(name, 0) + 1
                del self.unhealthy_since[name]
                log.warning("%s (pid %s) unhealthy for %.0fs: restarting it", name, pid, now - since,
                            extra={"event": "watchdog_restart", "component": name, "pid": pid,
                                   "restarts": self.restarts[name]})
        return signals


def watch(state: StateDir, dog: Watchdog) -> None:
    """One tick: read the platform's status, send what the watchdog decides through supervisord."""
    from finopti.platform import platform_status, supervisor_rpc

    try:
        statuses = platform_status(state)
    except FinoptiError:  # stopping, or not (yet) running: nothing to judge
        return
    rpc = supervisor_rpc(state)
    for name, signal in dog.tick({s.name: (s.state, s.pid) for s in statuses}):
        try:
            rpc.signalProcess(name, signal)
        except (OSError, xmlrpc.client.Error) as exc:  # it exited meanwhile: supervisord starts it again
            log.info("signal %s to %s not sent: %s", signal, name, exc)


def main() -> None:
    from supervisor import childutils

    from finopti.paths import state_dir
    from finopti.telemetry import configure_logging

    protocol = sys.stdout  # supervisord's event protocol; logs go to stderr
    sys.stdout = sys.stderr
    configure_logging("watchdog", os.environ.get("FINOPTI_VERSION", "v1"))
    state, dog = state_dir(), Watchdog()
    while True:
        childutils.listener.wait(sys.stdin, protocol)
        try:
            watch(state, dog)
        except Exception:  # a bad tick must not stop the next one
            log.exception("watchdog tick failed")
        childutils.listener.ok(protocol)


if __name__ == "__main__":
    main()
