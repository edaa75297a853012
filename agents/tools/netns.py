"""A private two-namespace network lab with a kernel-shaped uplink, for measuring nairbus over real links.

:class:`NetLab` is a context manager that builds, for one run::

    hub namespace  nb<pid>hub   veth nb<pid>h  10.201.0.1/30   (Mosquitto, fusion, result recorder)
                                   |
    device ns      nb<pid>dev   veth nb<pid>d  10.201.0.2/30   (sensor)  egress: tbf rate R

The veth pair is created with both ends already inside their namespaces, so it never appears in the root
namespace; its addresses exist only inside the lab (each namespace has its own routing table, so nothing outside is
routed or shadowed), and loopback is brought up in both. The device side's egress (the sensor→hub uplink) is shaped
with the kernel's token bucket filter, ``tbf`` (``netem`` is not available on every kernel; this one has none):

- ``rate``: the link rate in bits per second (``None``: unshaped, no qdisc is added);
- ``burst`` (the bucket size): ``max(2 × 1514, rate / 8 / 100)`` bytes by default — 10 ms worth of the rate, but
  never less than two full Ethernet frames, because tbf cannot send a packet larger than its bucket and a bucket of
  one MTU makes the measured rate sag. Larger buckets let short bursts through at line rate, which a constrained
  radio link would not do;
- ``latency``: how long a packet may wait in the tbf queue before it is dropped (50 ms by default), which sizes the
  queue as ``rate × latency + burst`` — a shallow, radio-like buffer, so a sender that overruns the link sees drops
  and TCP backs off instead of hiding seconds of backlog in the qdisc.

On exit — normal, exception, SIGTERM or SIGINT — every process the lab started is terminated (then killed), the veth
is deleted and both namespaces are removed. At start, leftovers of a crashed earlier run are removed: namespaces with
this lab's own names, and ``nb<pid>...`` namespaces whose owning process no longer exists. Every command the lab runs
is bounded in time. Clear errors say what is missing when not root, when ``ip``/``tc`` are absent, or when the
kernel refuses to create namespaces (an unprivileged container).

>>> default_burst(1_000_000)
3028
>>> default_burst(100_000_000)
125000
>>> tbf_args("nb1d", LinkShape(250_000))
['tc', 'qdisc', 'replace', 'dev', 'nb1d', 'root', 'tbf', 'rate', '250000bit', 'burst', '3028', 'latency', '50ms']
"""

from __future__ import annotations

import atexit
import contextlib
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Any, Self

from nairbus.agents.runtime.logging import get_logger

log = get_logger("nairbus.netns")

HUB_ADDR = "10.201.0.1"
"""The hub side's address, inside the hub namespace only."""
DEV_ADDR = "10.201.0.2"
"""The device side's address, inside the device namespace only."""
PREFIX_LEN = 30
ETHERNET_FRAME = 1514
"""Largest Ethernet frame without FCS for a 1500-byte MTU: the smallest sane tbf bucket is two of them."""
COMMAND_TIMEOUT_S = 15.0
"""Bound on every ``ip``/``tc`` command the lab runs."""
_LAB_NAME = re.compile(r"^nb(\d+)(?:x\d+)?(?:hub|dev)$")
_QDISC_SENT = re.compile(r"Sent (\d+) bytes (\d+) pkt \(dropped (\d+), overlimits (\d+) requeues (\d+)\)")
_counter = 0
_counter_lock = threading.Lock()


class LabError(RuntimeError):
    """The lab cannot be built here; the message says why and what to do."""


def default_burst(rate_bps: int) -> int:
    """tbf bucket in bytes for ``rate_bps``: 10 ms worth of the rate, at least two full Ethernet frames."""
    return max(2 * ETHERNET_FRAME, math.ceil(rate_bps / 8 / 100))


@dataclass(frozen=True, slots=True)
class LinkShape:
    """How the device→hub uplink is shaped: ``rate_bps=None`` leaves it unshaped."""

    rate_bps: int | None = None
    latency_ms: float = 50.0
    """tbf's queue bound: packets that would wait longer are dropped."""
    burst_bytes: int | None = None
    """tbf bucket; default :func:`default_burst`."""
    delay_ms: float = 0.0
    """One-way delay of the path, each direction (a round trip of twice it): the namespaces are then joined by a
    pair of TUN devices and a user-space delay line (:mod:`nairbus.agents.tools.delayline`) instead of a veth."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.delay_ms <= 5000.0:
            raise ValueError(f"a path's one-way delay is 0..5000 ms, not {self.delay_ms}")
        if self.rate_bps is not None and self.rate_bps < 8000:
            raise ValueError(f"rate {self.rate_bps} bit/s is below 8 kbit/s; tbf cannot shape that sensibly")
        if self.latency_ms <= 0:
            raise ValueError("tbf latency must be positive")
        if self.burst_bytes is not None and self.burst_bytes < ETHERNET_FRAME:
            raise ValueError(f"a tbf bucket below one Ethernet frame ({ETHERNET_FRAME} B) never sends a full frame")

    @property
    def burst(self) -> int | None:
        """The bucket in bytes (None when unshaped)."""
        if self.rate_bps is None:
            return None
        return self.burst_bytes if self.burst_bytes is not None else default_burst(self.rate_bps)

    @property
    def label(self) -> str:
        """``unshaped``, ``10 Mbit/s``, ``250 kbit/s``… (with `` RTT 300 ms`` for a delayed path)"""
        return rate_label(self.rate_bps) + (f" RTT {2 * self.delay_ms:g} ms" if self.delay_ms else "")


def rate_label(rate_bps: int | None) -> str:
    """A link rate for people: ``unshaped``, ``10 Mbit/s``, ``250 kbit/s``, ``1.5 Mbit/s``.

    >>> [rate_label(r) for r in (None, 10_000_000, 1_500_000, 250_000, 100_000)]
    ['unshaped', '10 Mbit/s', '1.5 Mbit/s', '250 kbit/s', '100 kbit/s']
    """
    if rate_bps is None:
        return "unshaped"
    if rate_bps >= 1_000_000:
        return f"{rate_bps / 1e6:g} Mbit/s"
    return f"{rate_bps / 1e3:g} kbit/s"


def tbf_args(device: str, shape: LinkShape) -> list[str]:
    """The ``tc`` command that puts ``shape``'s tbf on ``device`` (``replace``: adds it or changes it)."""
    if shape.rate_bps is None:
        raise ValueError("an unshaped link has no tbf")
    return ["tc", "qdisc", "replace", "dev", device, "root", "tbf", "rate", f"{shape.rate_bps}bit",
            "burst", str(shape.burst), "latency", f"{shape.latency_ms:g}ms"]


def parse_qdisc_stats(text: str) -> dict[str, int] | None:
    """The first ``Sent … bytes … pkt (dropped …, overlimits … requeues …)`` of ``tc -s qdisc show`` output.

    >>> parse_qdisc_stats(" Sent 1200 bytes 10 pkt (dropped 2, overlimits 5 requeues 0) ")
    {'sent_bytes': 1200, 'sent_packets': 10, 'dropped': 2, 'overlimits': 5, 'requeues': 0}
    """
    match = _QDISC_SENT.search(text)
    if match is None:
        return None
    keys = ("sent_bytes", "sent_packets", "dropped", "overlimits", "requeues")
    return dict(zip(keys, (int(g) for g in match.groups()), strict=True))


def check_environment() -> None:
    """Raise :class:`LabError` unless this process can build a lab (root, ``ip`` and ``tc`` present)."""
    if os.geteuid() != 0:
        raise LabError("the link bench builds network namespaces and shapes a veth with tc, which needs root "
                       "(CAP_SYS_ADMIN and CAP_NET_ADMIN); run it as root, e.g. `sudo .venv/bin/nairbus bench link`")
    missing = [tool for tool in ("ip", "tc") if shutil.which(tool) is None]
    if missing:
        raise LabError(f"{' and '.join(missing)} not found on PATH; install iproute2 "
                       "(`sudo apt-get install iproute2`)")


def _run(args: Sequence[str], timeout: float = COMMAND_TIMEOUT_S,
         check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        done = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, check=False,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"`{' '.join(args)}` did not finish within {timeout:g} s") from exc
    if check and done.returncode != 0:
        raise LabError(f"`{' '.join(args)}` failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
    return done


def list_namespaces() -> list[str]:
    """Names of the network namespaces ``ip netns`` knows."""
    out = _run(["ip", "netns", "list"]).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_namespace_processes(namespace: str) -> None:
    """Terminate, then kill, the processes left inside one of the lab's own namespaces."""
    done = _run(["ip", "netns", "pids", namespace], check=False)
    pids = [int(p) for p in done.stdout.split() if p.isdigit() and int(p) != os.getpid()]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 2.0
        while pids and time.monotonic() < deadline:
            pids = [p for p in pids if _pid_alive(p)]
            time.sleep(0.05)
        if not pids:
            return


def delete_namespace(namespace: str) -> None:
    """Remove one lab namespace: its processes, its links (the veth goes with its peer), the namespace."""
    _kill_namespace_processes(namespace)
    links = _run(["ip", "-n", namespace, "-o", "link", "show"], check=False).stdout
    for line in links.splitlines():
        name = line.split(":")[1].strip().split("@")[0] if ":" in line else ""
        if name.startswith("nb"):
            _run(["ip", "-n", namespace, "link", "del", name], check=False)
    _run(["ip", "netns", "del", namespace], check=False)


def sweep_stale(names: Sequence[str] = ()) -> list[str]:
    """Remove ``names`` and every ``nb<pid>…`` lab namespace whose process is gone; returns what was removed."""
    removed = []
    for namespace in list_namespaces():
        match = _LAB_NAME.match(namespace)
        stale = match is not None and int(match.group(1)) != os.getpid() and not _pid_alive(int(match.group(1)))
        if namespace in names or stale:
            delete_namespace(namespace)
            removed.append(namespace)
    if removed:
        log.warning("netns.leftovers_removed", namespaces=removed)
    return removed


class NetLab:
    """Two private network namespaces joined by a veth pair, the device side's egress shaped with tbf.

    ``prefix`` names everything (default ``nb<pid>``, then ``nb<pid>x<n>`` for later labs of the same process):
    namespaces ``<prefix>hub``/``<prefix>dev``, veth ends ``<prefix>h``/``<prefix>d``.
    """

    def __init__(self, shape: LinkShape | None = None, *, prefix: str | None = None) -> None:
        global _counter  # a per-process counter keeps the names of successive labs apart
        with _counter_lock:
            n, _counter = _counter, _counter + 1
        self.prefix = prefix or (f"nb{os.getpid()}" + (f"x{n}" if n else ""))
        if not re.fullmatch(r"[a-z][a-z0-9]{0,11}", self.prefix):
            raise ValueError(f"lab prefix {self.prefix!r} must be 1-12 lowercase letters/digits starting with a letter")
        self.shape = shape or LinkShape()
        self.hub = f"{self.prefix}hub"
        self.dev = f"{self.prefix}dev"
        self.hub_if = f"{self.prefix}h"
        self.dev_if = f"{self.prefix}d"
        self.hub_addr = HUB_ADDR
        self.dev_addr = DEV_ADDR
        self._procs: list[subprocess.Popen[Any]] = []
        self._built = False
        self._old_handlers: dict[int, Any] = {}

    # ----- building and tearing down --------------------------------------------------------------------------

    def __enter__(self) -> Self:
        check_environment()
        self._install_signal_handlers()
        atexit.register(self.close)
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _build(self) -> None:
        sweep_stale((self.hub, self.dev))
        for namespace in (self.hub, self.dev):
            done = _run(["ip", "netns", "add", namespace], check=False)
            if done.returncode != 0:
                raise LabError(
                    f"cannot create network namespace {namespace}: {done.stderr.strip()}. Creating namespaces needs "
                    "CAP_SYS_ADMIN in the initial user namespace; an unprivileged container cannot (run on the "
                    "host, or give the container --privileged / --cap-add SYS_ADMIN --cap-add NET_ADMIN)")
            self._built = True
        if self.shape.delay_ms > 0:
            self._join_by_delay_line(self.shape.delay_ms)
        else:
            _run(["ip", "link", "add", self.hub_if, "netns", self.hub, "type", "veth",
                  "peer", "name", self.dev_if, "netns", self.dev])
        for namespace, ifname, addr, peer in ((self.hub, self.hub_if, self.hub_addr, self.dev_addr),
                                              (self.dev, self.dev_if, self.dev_addr, self.hub_addr)):
            _run(["ip", "-n", namespace, "link", "set", "lo", "up"])
            address = [f"{addr}/{PREFIX_LEN}"] if self.shape.delay_ms <= 0 else [addr, "peer", f"{peer}/32"]
            _run(["ip", "-n", namespace, "addr", "add", *address, "dev", ifname])
            _run(["ip", "-n", namespace, "link", "set", ifname, "up"])
        if self.shape.rate_bps is not None:
            self.set_shape(self.shape)
        log.info("netns.built", hub=self.hub, dev=self.dev, rate_bps=self.shape.rate_bps, burst=self.shape.burst,
                 latency_ms=self.shape.latency_ms)

    def _join_by_delay_line(self, delay_ms: float) -> None:
        """Two TUN devices, made by a delay-line process in this namespace and moved into the lab's, in place of the
        veth: every packet between them waits ``delay_ms`` in user space (the process is stopped with the lab)."""
        proc = subprocess.Popen(
            [sys.executable, "-m", "nairbus.agents.tools.delayline", "--a", self.dev_if, "--b", self.hub_if,
             "--delay-ms", f"{delay_ms:g}"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, start_new_session=True)
        self._procs.append(proc)
        assert proc.stdout is not None
        ready: list[str] = []
        reader = threading.Thread(target=lambda: ready.append(proc.stdout.readline() if proc.stdout else ""),
                                  daemon=True)
        reader.start()
        reader.join(COMMAND_TIMEOUT_S)
        if not ready or ready[0].strip() != "ready":
            err = proc.stderr.read() if proc.poll() is not None and proc.stderr else ""
            raise LabError(f"the delay line did not start: {err.strip() or 'no answer'} (it needs /dev/net/tun)")
        _run(["ip", "link", "set", self.dev_if, "netns", self.dev])
        _run(["ip", "link", "set", self.hub_if, "netns", self.hub])

    def set_shape(self, shape: LinkShape) -> None:
        """Shape (or, with ``rate_bps=None``, unshape) the device side's egress now."""
        if shape.rate_bps is None:
            _run(["ip", "netns", "exec", self.dev, "tc", "qdisc", "del", "dev", self.dev_if, "root"], check=False)
        else:
            done = _run(["ip", "netns", "exec", self.dev, *tbf_args(self.dev_if, shape)], check=False)
            if done.returncode != 0:
                raise LabError(f"cannot add a tbf qdisc: {done.stderr.strip()} (is the sch_tbf kernel module "
                               "available? `modprobe sch_tbf`)")
        self.shape = shape

    def close(self) -> None:
        """Stop every process the lab started and remove its veth and namespaces; idempotent.

        A second SIGTERM/SIGINT while it cleans up is ignored, so that the clean-up itself is not cut short."""
        for sig in self._old_handlers:
            with contextlib.suppress(ValueError):
                signal.signal(sig, signal.SIG_IGN)
        self.stop_processes()
        if self._built:
            for namespace in (self.dev, self.hub):
                delete_namespace(namespace)
            self._built = False
            log.info("netns.removed", hub=self.hub, dev=self.dev)
        self._restore_signal_handlers()
        with contextlib.suppress(Exception):
            atexit.unregister(self.close)

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def handler(signum: int, _frame: FrameType | None) -> None:
            # Unwind through the ``with`` block, so that __exit__ removes the lab.
            raise SystemExit(128 + signum)

        for sig in (signal.SIGTERM, signal.SIGINT):
            self._old_handlers[sig] = signal.signal(sig, handler)

    def _restore_signal_handlers(self) -> None:
        for sig, old in self._old_handlers.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(sig, old)
        self._old_handlers.clear()

    # ----- running things inside ------------------------------------------------------------------------------

    def command(self, namespace: str, args: Sequence[str]) -> list[str]:
        """``args`` wrapped to run inside ``namespace`` (``ip netns exec <ns> …``)."""
        if namespace not in (self.hub, self.dev):
            raise ValueError(f"{namespace!r} is not one of this lab's namespaces ({self.hub}, {self.dev})")
        return ["ip", "netns", "exec", namespace, *args]

    def run(self, namespace: str, args: Sequence[str], *, timeout: float = COMMAND_TIMEOUT_S, check: bool = True,
            env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run a command inside ``namespace`` to completion (killed after ``timeout`` seconds)."""
        proc = self.popen(namespace, args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop_process(proc, grace=1.0)
            raise LabError(f"`{' '.join(args)}` in {namespace} did not finish within {timeout:g} s") from None
        finally:
            self.stop_process(proc, grace=1.0)
        done = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
        if check and done.returncode != 0:
            raise LabError(f"`{' '.join(args)}` in {namespace} failed ({done.returncode}): {err.strip()}")
        return done

    def popen(self, namespace: str, args: Sequence[str], *, stdout: IO[Any] | int | None = subprocess.DEVNULL,
              stderr: IO[Any] | int | None = subprocess.DEVNULL, env: Mapping[str, str] | None = None,
              cwd: Path | None = None, text: bool = False) -> subprocess.Popen[Any]:
        """Start a process inside ``namespace``; it is stopped when the lab closes (or by :meth:`stop_process`).

        ``ip netns exec`` execs the command, so the returned process *is* the command (its pid, its exit status).
        """
        if not self._built:
            raise LabError("the lab is not built (use it as a context manager)")
        proc = subprocess.Popen(self.command(namespace, args), stdin=subprocess.DEVNULL, stdout=stdout,
                                stderr=stderr, env=dict(env) if env is not None else None, cwd=cwd, text=text,
                                start_new_session=True)
        self._procs.append(proc)
        return proc

    def stop_process(self, proc: subprocess.Popen[Any], grace: float = 5.0) -> int | None:
        """SIGTERM ``proc``'s process group, SIGKILL after ``grace`` seconds; returns its exit status."""
        with contextlib.suppress(ValueError):
            self._procs.remove(proc)
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(5.0)
        return proc.returncode

    def stop_processes(self, grace: float = 5.0) -> None:
        """Stop every process the lab started, newest first."""
        while self._procs:
            self.stop_process(self._procs[-1], grace)

    # ----- evidence ---------------------------------------------------------------------------------------------

    def qdisc_show(self) -> str:
        """``tc -s qdisc show`` inside the device namespace (the shaped uplink's counters)."""
        return _run(["ip", "netns", "exec", self.dev, "tc", "-s", "qdisc", "show", "dev", self.dev_if]).stdout

    def qdisc_stats(self) -> dict[str, int] | None:
        """Sent bytes and packets, drops and overlimits of the device side's root qdisc."""
        return parse_qdisc_stats(self.qdisc_show())


BULK_RECEIVER = """
import json, socket, sys, time
host, port, limit = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); srv.bind((host, port)); srv.listen(1)
srv.settimeout(limit); print("listening", flush=True)
conn, _ = srv.accept(); conn.settimeout(limit)
total, first, last, end = 0, None, None, time.monotonic() + limit
while time.monotonic() < end:
    data = conn.recv(65536)
    if not data:
        break
    now = time.monotonic(); first = first or now; last = now; total += len(data)
print(json.dumps({"bytes": total, "seconds": (last - first) if first and last else 0.0}), flush=True)
"""
BULK_SENDER = """
import socket, sys, time
host, port, seconds, limit = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
sock = socket.create_connection((host, port), timeout=10); sock.settimeout(seconds + 5)
chunk, sent, end = b"x" * 16384, 0, time.monotonic() + seconds
while time.monotonic() < end and sent < limit:
    sent += sock.send(chunk[: limit - sent])
sock.close()
"""


def measure_uplink(lab: NetLab, seconds: float = 2.0, max_bytes: int = 200_000_000, port: int = 5201) -> float:
    """Bits per second a bounded TCP bulk send from the device namespace to the hub achieves (measured by the
    receiver, from its first byte to its last). Targets only the lab's own hub address."""
    limit = seconds + 10.0
    receiver = lab.popen(lab.hub, [sys.executable, "-c", BULK_RECEIVER, lab.hub_addr, str(port), str(limit)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert receiver.stdout is not None
        if receiver.stdout.readline().strip() != "listening":
            raise LabError(f"bulk receiver did not start: {receiver.stderr.read() if receiver.stderr else ''}")
        lab.run(lab.dev, [sys.executable, "-c", BULK_SENDER, lab.hub_addr, str(port), str(seconds), str(max_bytes)],
                timeout=limit)
        out, err = receiver.communicate(timeout=limit)
    finally:
        lab.stop_process(receiver, grace=1.0)

    lines = [line for line in out.splitlines() if line.startswith("{")]
    if not lines:
        raise LabError(f"bulk receiver printed no result: {err.strip()}")
    result = json.loads(lines[-1])
    return float(result["bytes"]) * 8 / max(1e-6, float(result["seconds"]))


@contextlib.contextmanager
def lab(shape: LinkShape | None = None, prefix: str | None = None) -> Iterator[NetLab]:
    """``with lab(LinkShape(1_000_000)) as net: …`` — a :class:`NetLab` as a plain context manager."""
    with NetLab(shape, prefix=prefix) as net:
        yield net
