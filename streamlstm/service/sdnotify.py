"""systemd notifications (``Type=notify``, ``WatchdogSec=``) without a dependency.

The protocol is a datagram of ``KEY=VALUE`` lines sent to the Unix socket named
by ``$NOTIFY_SOCKET`` (a leading ``@`` means the abstract namespace). Outside
systemd the variable is unset and every call is a no-op.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)


class SystemdNotifier:
    """Sends READY/STOPPING/WATCHDOG/STATUS to systemd when run under it."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        addr = env.get("NOTIFY_SOCKET", "")
        self._addr: str | None = None
        if addr:
            self._addr = "\0" + addr[1:] if addr.startswith("@") else addr
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        # WATCHDOG_PID names the process the watchdog is meant for (unset = us).
        ours = not pid or pid == str(os.getpid())
        self.watchdog_s: float | None = int(usec) / 1e6 if usec.isdigit() and ours else None

    @property
    def enabled(self) -> bool:
        return self._addr is not None

    def notify(self, **fields: str | int) -> bool:
        """Send ``KEY=VALUE`` fields (keys upper-cased); False when not under systemd."""
        if self._addr is None:
            return False
        msg = "\n".join(f"{k.upper()}={v}" for k, v in fields.items()).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.connect(self._addr)
                sock.sendall(msg)
        except OSError as exc:  # systemd gone or socket not ours: never fatal
            log.warning("systemd notify failed: %s", exc)
            return False
        return True

    def ready(self, status: str = "ready") -> bool:
        return self.notify(ready=1, status=status)

    def stopping(self) -> bool:
        return self.notify(stopping=1, status="stopping")

    def watchdog(self) -> bool:
        return self.notify(watchdog=1)

    def status(self, text: str) -> bool:
        return self.notify(status=text)
