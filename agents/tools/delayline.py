"""A user-space delay line between two TUN devices: a long path's round trip, with the TCP connection end to end.

``netem`` is not in every kernel (not in this one), and a TCP proxy would split the sensor's connection in two and
hide the round trip from it. So the link lab can join its two namespaces with a pair of TUN devices instead of a
veth: this process creates them (``python -m nairbus.agents.tools.delayline --a DEV --b HUB --delay-ms D``), prints
``ready``, and the lab moves each into its namespace; from then on every IP packet the kernel routes into one device
is read here and written into the other ``D`` milliseconds later, in order, in both directions (a round trip of
``2 × D``). Shaping stays in the kernel: the device side's ``tbf`` sits on its TUN device, before the delay.

The queue of packets in flight is bounded (:data:`MAX_PACKETS` per direction; beyond it packets are dropped, as a
full router would, and counted), and the process ends on SIGTERM/SIGINT or after ``--max-seconds``. Needs root
(``/dev/net/tun``); only ever carries the lab's own private addresses.
"""

from __future__ import annotations

import argparse
import collections
import fcntl
import os
import signal
import struct
import sys
import threading
import time
from collections.abc import Callable, Sequence
from types import FrameType

__all__ = ["MAX_PACKETS", "DelayLine", "open_tun"]

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
MAX_PACKETS = 20_000
"""Packets in flight per direction before the line drops (at 10 Mbit/s and 300 ms one way: about 250)."""
MTU_READ = 65_536


def open_tun(name: str) -> int:
    """A new TUN device ``name`` (IP packets, no packet-info header) in this process's network namespace; its fd."""
    fd = os.open("/dev/net/tun", os.O_RDWR)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    except OSError:
        os.close(fd)
        raise
    return fd


class DelayLine:
    """Packets from fd ``a`` to fd ``b`` and back, each held ``delay_s`` seconds, in order."""

    def __init__(self, a: int, b: int, delay_s: float) -> None:
        if delay_s < 0:
            raise ValueError("a delay line's delay is >= 0")
        self.delay_s = delay_s
        self.dropped = 0
        self.carried = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=work, daemon=True, name=f"delayline-{i}")
                         for i, work in enumerate(self._direction(a, b) + self._direction(b, a))]

    def _direction(self, src: int, dst: int) -> list[Callable[[], None]]:
        """The reader and the writer of one direction."""
        queue: collections.deque[tuple[float, bytes]] = collections.deque()
        ready = threading.Condition()

        def read() -> None:
            while not self._stop.is_set():
                try:
                    packet = os.read(src, MTU_READ)
                except OSError:
                    return
                with ready:
                    if len(queue) >= MAX_PACKETS:
                        self.dropped += 1
                        continue
                    queue.append((time.monotonic() + self.delay_s, packet))
                    ready.notify()

        def write() -> None:
            while not self._stop.is_set():
                with ready:
                    while not queue and not self._stop.is_set():
                        ready.wait(0.5)
                    if not queue:
                        return
                    due, packet = queue[0]
                wait = due - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                with ready:
                    queue.popleft()
                try:
                    os.write(dst, packet)
                    self.carried += 1
                except OSError:  # the peer device is gone (the lab is being taken down)
                    return

        return [read, write]

    def start(self) -> None:
        """Start carrying packets."""
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Stop (the readers end when their devices close)."""
        self._stop.set()


def main(argv: Sequence[str] | None = None) -> int:
    """Create the two devices, say ``ready``, carry packets until told to stop."""
    parser = argparse.ArgumentParser(prog="python -m nairbus.agents.tools.delayline",
                                     description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--a", required=True, help="name of the first TUN device (the device side)")
    parser.add_argument("--b", required=True, help="name of the second TUN device (the hub side)")
    parser.add_argument("--delay-ms", type=float, required=True, help="one-way delay, each direction")
    parser.add_argument("--max-seconds", type=float, default=6 * 3600.0, help="end after this long at the latest")
    args = parser.parse_args(argv)
    if args.delay_ms < 0 or args.max_seconds <= 0:
        parser.error("--delay-ms >= 0 and --max-seconds > 0")
    try:
        a, b = open_tun(args.a), open_tun(args.b)
    except OSError as exc:
        print(f"error: cannot create TUN devices {args.a}/{args.b}: {exc} (root and /dev/net/tun needed)",
              file=sys.stderr)
        return 1
    line = DelayLine(a, b, args.delay_ms / 1000.0)
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    line.start()
    print("ready", flush=True)
    stop.wait(args.max_seconds)
    line.stop()
    os.close(a)
    os.close(b)
    print(f"carried {line.carried} packets, dropped {line.dropped}", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
