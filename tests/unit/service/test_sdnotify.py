"""The systemd notify protocol, checked against a real Unix datagram socket."""

from __future__ import annotations

import os
import socket

from streamlstm.service.sdnotify import SystemdNotifier


def test_messages_reach_the_socket(tmp_path):
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(path)
        server.settimeout(2)
        n = SystemdNotifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "20000000"})
        assert n.enabled and n.watchdog_s == 20.0
        assert n.ready("3 partitions")
        assert server.recv(1024) == b"READY=1\nSTATUS=3 partitions"
        assert n.watchdog()
        assert server.recv(1024) == b"WATCHDOG=1"
        assert n.stopping()
        assert server.recv(1024) == b"STOPPING=1\nSTATUS=stopping"


def test_abstract_socket_address():
    name = f"streamlstm-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind("\0" + name)
        server.settimeout(2)
        assert SystemdNotifier({"NOTIFY_SOCKET": "@" + name}).watchdog()
        assert server.recv(64) == b"WATCHDOG=1"


def test_noop_outside_systemd_and_watchdog_for_other_pid():
    n = SystemdNotifier({})
    assert not n.enabled and not n.ready() and n.watchdog_s is None
    other = SystemdNotifier({"NOTIFY_SOCKET": "/nonexistent", "WATCHDOG_USEC": "1000000",
                             "WATCHDOG_PID": "1"})  # fmt: skip
    assert other.watchdog_s is None
    assert not other.notify(status="x")  # a dead socket is logged, not raised
