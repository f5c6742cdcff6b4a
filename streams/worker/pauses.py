"""Whether this process just ran again after a pause long enough to lose its group membership.

A process stopped (SIGSTOP, a frozen VM, a starved CPU) for longer than the session timeout
has been expelled from the consumer group, but learns it only from its next heartbeat. Right
after it runs again its offset commit may come first, and the states it would send then are
older than those the partitions' new owner sent meanwhile (see ``streams.worker.checkpoint``).
The event loop's own timer shows the pause: a state sent within two heartbeats of one waits
for them, so the consumer knows by then whether it is still a member.

>>> now = [0.0]
>>> watch = PauseWatch(session_timeout_s=2.0, heartbeat_interval_s=0.5, clock=lambda: now[0])
>>> now[0] = 30.0; watch.wait_s()   # the first tick (here, the first question) starts the watch
0.0
>>> now[0] = 30.5; watch.tick(); watch.wait_s()
0.0
>>> now[0] = 34.0; watch.wait_s()   # 3.5 s without a tick: wait two heartbeats
1.0
>>> now[0] = 34.6; watch.tick(); round(watch.wait_s(), 2)
0.4
>>> now[0] = 35.1; watch.tick(); watch.wait_s()
0.0
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

log = logging.getLogger("crm360")


class PauseWatch:
    """Ticked by a timer every heartbeat interval; :meth:`wait_s` says how long to wait before
    trusting the consumer's membership."""

    def __init__(
        self, session_timeout_s: float, heartbeat_interval_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.session_timeout_s, self.clock = session_timeout_s, clock
        #: The consumer's heartbeats have answered by then.
        self.confirm_s = 2 * heartbeat_interval_s
        self.ticked_at: float | None = None  # the first tick only starts the watch (start-up is slow)
        self.resumed_at = -math.inf

    def tick(self) -> None:
        now = self.clock()
        if self.ticked_at is not None and now - self.ticked_at > self.session_timeout_s:
            # Not a warning: a start-up's slow steps stand the event loop still too, heartbeats
            # go on in the consumer's thread, and an expulsion is told where it is learnt.
            log.info(
                "this process stood still for %.1f s, longer than the session timeout: "
                "it sends no state until its heartbeats say whether it is still in the consumer group",
                now - self.ticked_at,
            )
            self.resumed_at = now
        self.ticked_at = now

    def wait_s(self) -> float:
        """Seconds left until two heartbeats came after the last pause (0.0: none lately)."""
        self.tick()
        return max(0.0, self.resumed_at + self.confirm_s - self.clock())
