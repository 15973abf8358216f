"""What the loop reports about itself: its health for /healthz and /readyz.

Written by the loop thread only; read by the HTTP server's threads (plain
attribute reads of bools and floats).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class Health:
    """What /healthz and /readyz read; written by the loop thread only."""

    pipeline: str
    heartbeat: float = field(default_factory=time.monotonic)
    compiled: bool = False
    assigned: bool = False
    restored: bool = False
    broker_up: bool = False
    # True while blocked in a connect attempt (bounded by kafka-python's own timeouts,
    # ~30 s to give up on a bootstrap server): waiting for a broker is not being stuck.
    connecting: bool = False

    @property
    def ready(self) -> bool:
        return self.compiled and self.assigned and self.restored and self.broker_up

    def beat(self) -> None:
        self.heartbeat = time.monotonic()
