"""systemd's notify protocol (Type=notify): start-up stages, READY once connected, WATCHDOG pings from the
event loop, STOPPING.

A datagram to $NOTIFY_SOCKET, as sd_notify(3) sends it; without systemd the variable is unset and nothing is sent.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)


def notify(message: str, environ: Mapping[str, str] = os.environ) -> bool:
    """Send one notification ("READY=1", "WATCHDOG=1", …); False when not running under systemd."""
    address = environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            # Never wait on the event loop: like sd_notify (MSG_DONTWAIT), a full queue drops the message.
            sock.setblocking(False)
            sock.connect(address)
            sock.send(message.encode())
    except OSError as exc:
        log.warning("could not notify systemd (%s): %s", message.split("\n")[0], exc)
        return False
    return True


# Each stage the engine reports at start (loading, each compile) gets this long again before systemd's start
# timeout: a compiled model's warm-up may take longer in all than TimeoutStartSec, but no single stage does.
STAGE_TIMEOUT_S = 600


def starting(stage: str, environ: Mapping[str, str] = os.environ) -> bool:
    """Tell systemd the start is going on (another STAGE_TIMEOUT_S from now) and what it is doing."""
    return notify(f"EXTEND_TIMEOUT_USEC={STAGE_TIMEOUT_S * 1_000_000}\nSTATUS=engine: {stage}", environ)


def watchdog_interval(environ: Mapping[str, str] = os.environ) -> float | None:
    """Seconds between watchdog pings (half of WatchdogSec=), or None when systemd does not watch this process."""
    usec = environ.get("WATCHDOG_USEC")
    pid = environ.get("WATCHDOG_PID")
    if not usec or not usec.isdigit() or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 1e6 / 2
