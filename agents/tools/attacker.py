"""The fault bench's hostile device: a known sensor whose messages are fuzz or a flood, run as a process of its own.

The bench (:mod:`nairbus.agents.tools.faultbench`) starts it as ``python -m nairbus.agents.tools.attacker`` so that it
can be put in a CPU control group of its own (:mod:`nairbus.agents.tools.cpugroups`) — a device spends its own CPU, not
the hub's. It connects with a valid birth, prints ``{"event": "attacking"}`` when the first hostile message is about to
go, then one JSON line with what it sent, and exits. Every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import msgpack  # type: ignore[import-untyped]

from nairbus.schemas.topics import TopicTree

U64 = 2**64 - 1


class Attacker:
    """A known sensor (with a valid birth) whose messages are hostile."""

    def __init__(self, host: str, port: int, root: str, site: str, data_dir: Path | None = None,
                 sensor_id: str = "evil") -> None:
        from nairbus.agents.nair.sensor import SensorAgent
        from nairbus.agents.runtime.config import AgentConfig, SensorSettings

        cfg = AgentConfig.model_validate({
            "broker": {"host": host, "port": port, "max_outgoing": 50_000},
            "topics": {"root": root, "site": site},
            "sensor": SensorSettings(sensor_id=sensor_id, link_fit=False, budget_fraction=1.0).model_dump()})
        self.agent = SensorAgent(cfg)
        self.agent.start()
        self.topics = TopicTree(root, site)
        self.sid = sensor_id
        self.rng = random.Random(17)
        self.sent = 0
        self.refused = 0
        self.kinds: dict[str, int] = {}
        from nairbus.models.data.registry import load_data

        self.images = load_data("test", data_dir=data_dir).images[:64]
        self.codes = self.agent.pipeline.encode(self.images)

    def valid_frame(self, frame_id: int) -> list[bytes]:
        out = self.agent.build(frame_id, self.images[frame_id % 64], self.codes[frame_id % 64], time.time(), None)
        return [m.payload for m in out]

    def publish(self, topic: str, payload: bytes, kind: str) -> None:
        while not self.agent.comm.publish(topic, payload, qos=0, content_type=None, alias=True):
            self.refused += 1
            time.sleep(0.002)  # paho's queue is full: wait rather than drop (every hostile message is sent)
            if not self.agent.comm.connected.is_set():
                return
        self.sent += 1
        self.kinds[kind] = self.kinds.get(kind, 0) + 1

    def hostile(self, i: int) -> tuple[str, bytes, str]:
        """The i-th hostile message: (topic, payload, kind)."""
        r = self.rng
        frag, image, topk = (self.topics.sensor_frag(self.sid), self.topics.sensor_image(self.sid),
                             self.topics.sensor_topk(self.sid))
        choice = i % 8
        if choice == 0:
            n = r.choice((0, 1, 7, 64, 500, 4000))
            return r.choice((frag, image, topk)), r.randbytes(n), "random_bytes"
        if choice == 1:
            payload = bytearray(self.valid_frame(r.randrange(64))[0])
            for _ in range(r.randint(1, 4)):
                payload[r.randrange(len(payload))] ^= 1 << r.randrange(8)
            return frag, bytes(payload), "byte_flips"
        if choice == 2:
            tag = self.agent.ctx.tag
            fields = [2, tag, r.choice((0, U64, r.randrange(U64))), r.choice((0, U64, r.randrange(2**40))),
                      r.choice((0, 2**40 - 1, r.randrange(10**6))), r.choice((0, U64, 5)),
                      r.choice((0, 1, U64)), r.choice((0, U64, 6272)), b"\x00" * r.choice((0, 1, 100))]
            return frag, msgpack.packb(fields), "extreme_fields"
        if choice == 3:
            payload = msgpack.unpackb(self.valid_frame(r.randrange(64))[0])
            payload[1] = (payload[1] + 1 + r.randrange(126)) % 128  # another session's tag
            return frag, msgpack.packb(payload), "wrong_session"
        if choice == 4:
            payload = msgpack.unpackb(self.valid_frame(r.randrange(64))[0])
            payload[4] = 0  # captured at the epoch: long expired
            return frag, msgpack.packb(payload), "expired"
        if choice == 5:
            return r.choice((frag, image)), r.randbytes(60_000), "oversize"
        if choice == 6:
            payload = msgpack.unpackb(self.valid_frame(r.randrange(64))[0])
            payload[2] = r.choice((U64, 2**63 + r.randrange(2**62)))  # sequence jumps to the top
            return frag, msgpack.packb(payload), "seq_jump"
        return r.choice((image, topk)), msgpack.packb([2, 0, 1, 2, 3, [1, 2], b"x"]), "wrong_kind"

    def fuzz(self, count: int, seconds: float) -> float:
        began = time.monotonic()
        for i in range(count):
            if time.monotonic() - began > seconds:
                break
            topic, payload, kind = self.hostile(i)
            self.publish(topic, payload, kind)
        self.agent.comm.wait_published(timeout=30)
        return time.monotonic() - began

    def flood(self, seconds: float) -> float:
        began = time.monotonic()
        frame_id = 10**6
        while time.monotonic() - began < seconds:
            for payload in self.valid_frame(frame_id):
                self.publish(self.topics.sensor_frag(self.sid), payload, "valid_flood")
            frame_id += 1
        self.agent.comm.wait_published(timeout=30)
        return time.monotonic() - began

    def close(self) -> None:
        self.agent.stop()


def main(argv: list[str] | None = None) -> int:
    """``python -m nairbus.agents.tools.attacker fuzz|flood --host H --port P ...``: attack, print what was sent."""
    parser = argparse.ArgumentParser(prog="python -m nairbus.agents.tools.attacker",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("fuzz", "flood"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--root", required=True, help="topic root")
    parser.add_argument("--site", required=True)
    parser.add_argument("--count", type=int, default=100_000, help="fuzz: hostile messages to send at most")
    parser.add_argument("--seconds", type=float, required=True, help="time bound of the attack")
    parser.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.count < 0 or not 0 < args.seconds <= 3600:
        parser.error("--count must be >= 0 and --seconds in (0, 3600]")
    attacker = Attacker(args.host, args.port, args.root, args.site, args.data_dir)
    try:
        print(json.dumps({"event": "attacking"}), flush=True)
        seconds = attacker.fuzz(args.count, args.seconds) if args.mode == "fuzz" else attacker.flood(args.seconds)
    finally:
        attacker.close()
    print(json.dumps({"sent": attacker.sent, "refused": attacker.refused, "kinds": attacker.kinds,
                      "seconds": round(seconds, 3)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
