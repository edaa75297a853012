"""The versioned MQTT topic tree of nairbus.

Every topic lives under ``<root>/v1/<site>/``::

    <root>/v1/<site>/sensors/<sensor_id>/{status,birth,frag,topk,image,set,response,controls}
    <root>/v1/<site>/results/<stream_id>
    <root>/v1/<site>/streams/<stream_id>/{state,metrics,events,availability}
    <root>/v1/<site>/fusion/<fusion_id>/{status,stats,set,response}
    <root>/v1/<site>/frames/<stream_id>

``set`` carries commands to a sensor or a fusion agent (JSON :class:`~nairbus.schemas.messages.Command`), ``response``
its answers and ``controls`` a sensor's current, retained settings; the ``streams`` leaves are what the fusion
agent publishes for home automation (the current label, rate-limited figures, label changes, whether it is live).

>>> tree = TopicTree(root="lab/nairbus", site="bench")
>>> tree.sensor_frag("cam-01")
'lab/nairbus/v1/bench/sensors/cam-01/frag'
>>> tree.parse("lab/nairbus/v1/bench/sensors/cam-01/frag")
ParsedTopic(kind='sensor_frag', ident='cam-01')
>>> tree.parse("other/v1/bench/sensors/cam-01/frag") is None
True
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal, get_args

from nairbus.schemas.ids import ID_REGEX, validate_id

__all__ = [
    "TOPIC_VERSION",
    "FusionLeaf",
    "ParsedTopic",
    "SensorLeaf",
    "StreamLeaf",
    "TopicKind",
    "TopicTree",
]

TOPIC_VERSION: Final = "v1"

SensorLeaf = Literal["status", "birth", "frag", "topk", "image", "item", "set", "response", "controls"]
"""The last level of a sensor topic."""
FusionLeaf = Literal["status", "stats", "set", "response"]
"""The last level of a fusion topic."""
StreamLeaf = Literal["state", "metrics", "events", "availability"]
"""The last level of a stream topic (what the fusion agent publishes for home automation)."""
TopicKind = Literal[
    "sensor_status", "sensor_birth", "sensor_frag", "sensor_topk", "sensor_image", "sensor_item", "sensor_set",
    "sensor_response", "sensor_controls", "result", "fusion_status", "fusion_stats", "fusion_set", "fusion_response",
    "frame", "stream_state", "stream_metrics", "stream_events", "stream_availability",
]
"""What a topic of the tree carries, as returned by :meth:`TopicTree.parse`."""

_SENSOR_LEAVES: Final[frozenset[str]] = frozenset(get_args(SensorLeaf))
_FUSION_LEAVES: Final[frozenset[str]] = frozenset(get_args(FusionLeaf))
_STREAM_LEAVES: Final[frozenset[str]] = frozenset(get_args(StreamLeaf))
_SENSOR_KINDS: Final[dict[str, TopicKind]] = {
    "status": "sensor_status", "birth": "sensor_birth", "frag": "sensor_frag", "topk": "sensor_topk",
    "image": "sensor_image", "item": "sensor_item", "set": "sensor_set", "response": "sensor_response",
    "controls": "sensor_controls"}
_FUSION_KINDS: Final[dict[str, TopicKind]] = {
    "status": "fusion_status", "stats": "fusion_stats", "set": "fusion_set", "response": "fusion_response"}
_STREAM_KINDS: Final[dict[str, TopicKind]] = {
    "state": "stream_state", "metrics": "stream_metrics", "events": "stream_events",
    "availability": "stream_availability"}
_ROOT_PATTERN: Final = re.compile(rf"{ID_REGEX}(?:/{ID_REGEX})*")


@dataclass(frozen=True, slots=True)
class ParsedTopic:
    """A topic of the tree taken apart: what it carries and the sensor, stream or fusion id it is about."""

    kind: TopicKind
    ident: str


@dataclass(frozen=True, slots=True)
class TopicTree:
    """Builds and parses the topics of one nairbus deployment (``root``) and site.

    ``root`` is one or more ``/``-separated id segments; ``site`` is one id. Every builder validates its id argument
    and raises ``ValueError`` for anything that is not an id (so no ``+``, ``#`` or ``/`` can sneak into a topic).
    """

    root: str = "nairbus"
    site: str = "default"

    def __post_init__(self) -> None:
        if not isinstance(self.root, str) or _ROOT_PATTERN.fullmatch(self.root) is None:
            raise ValueError(
                f"invalid topic root {self.root!r}: must be '/'-separated segments of 1-64 characters from "
                "[A-Za-z0-9_-]"
            )
        validate_id(self.site, "site")

    @property
    def prefix(self) -> str:
        """``<root>/v1/<site>``, the level every topic of this tree starts with."""
        return f"{self.root}/{TOPIC_VERSION}/{self.site}"

    # -- sensors -------------------------------------------------------------------------------------------------
    def sensor(self, sensor_id: str, leaf: SensorLeaf) -> str:
        """``<prefix>/sensors/<sensor_id>/<leaf>``."""
        if leaf not in _SENSOR_LEAVES:
            raise ValueError(f"invalid sensor topic leaf {leaf!r}: must be one of {sorted(_SENSOR_LEAVES)}")
        return f"{self.prefix}/sensors/{validate_id(sensor_id, 'sensor_id')}/{leaf}"

    def sensor_status(self, sensor_id: str) -> str:
        """Retained :class:`~nairbus.schemas.messages.Status` of a sensor (and its last will)."""
        return self.sensor(sensor_id, "status")

    def sensor_birth(self, sensor_id: str) -> str:
        """Retained :class:`~nairbus.schemas.messages.Birth` of a sensor."""
        return self.sensor(sensor_id, "birth")

    def sensor_frag(self, sensor_id: str) -> str:
        """:class:`~nairbus.schemas.messages.Fragment` stream of a NAIR sensor."""
        return self.sensor(sensor_id, "frag")

    def sensor_topk(self, sensor_id: str) -> str:
        """:class:`~nairbus.schemas.messages.TopK` stream of a variant-parallel sensor."""
        return self.sensor(sensor_id, "topk")

    def sensor_image(self, sensor_id: str) -> str:
        """:class:`~nairbus.schemas.messages.ImageFrame` stream of an image-mode (or auto-mode) sensor."""
        return self.sensor(sensor_id, "image")

    def sensor_item(self, sensor_id: str) -> str:
        """``<prefix>/sensors/<id>/item``: the names of the sensor's items (the file each frame was read from)."""
        return self.sensor(sensor_id, "item")

    def sensor_set(self, sensor_id: str) -> str:
        """Commands to a sensor (:class:`~nairbus.schemas.messages.Command`)."""
        return self.sensor(sensor_id, "set")

    def sensor_response(self, sensor_id: str) -> str:
        """A sensor's answers to commands (:class:`~nairbus.schemas.messages.CommandResponse`)."""
        return self.sensor(sensor_id, "response")

    def sensor_controls(self, sensor_id: str) -> str:
        """Retained :class:`~nairbus.schemas.messages.Controls`: a sensor's current budget, deadline, rate, pause."""
        return self.sensor(sensor_id, "controls")

    def all_sensors(self, kind: SensorLeaf) -> str:
        """Subscription filter for one leaf of every sensor, e.g. ``<prefix>/sensors/+/frag``."""
        if kind not in _SENSOR_LEAVES:
            raise ValueError(f"invalid sensor topic leaf {kind!r}: must be one of {sorted(_SENSOR_LEAVES)}")
        return f"{self.prefix}/sensors/+/{kind}"

    # -- results -------------------------------------------------------------------------------------------------
    def result(self, stream_id: str) -> str:
        """:class:`~nairbus.schemas.messages.Result` stream: ``<prefix>/results/<stream_id>``."""
        return f"{self.prefix}/results/{validate_id(stream_id, 'stream_id')}"

    def all_results(self) -> str:
        """Subscription filter for every result stream: ``<prefix>/results/+``."""
        return f"{self.prefix}/results/+"

    # -- streams (home automation) ---------------------------------------------------------------------------------
    def stream(self, stream_id: str, leaf: StreamLeaf) -> str:
        """``<prefix>/streams/<stream_id>/<leaf>``."""
        if leaf not in _STREAM_LEAVES:
            raise ValueError(f"invalid stream topic leaf {leaf!r}: must be one of {sorted(_STREAM_LEAVES)}")
        return f"{self.prefix}/streams/{validate_id(stream_id, 'stream_id')}/{leaf}"

    # -- frames ----------------------------------------------------------------------------------------------------
    def frames(self, stream_id: str) -> str:
        """:class:`~nairbus.schemas.messages.Frame` stream a capture agent publishes for every VP sensor of a stream."""
        return f"{self.prefix}/frames/{validate_id(stream_id, 'stream_id')}"

    def all_frames(self) -> str:
        """Subscription filter for every frame stream: ``<prefix>/frames/+``."""
        return f"{self.prefix}/frames/+"

    # -- fusion --------------------------------------------------------------------------------------------------
    def fusion(self, fusion_id: str, leaf: FusionLeaf) -> str:
        """``<prefix>/fusion/<fusion_id>/<leaf>``."""
        if leaf not in _FUSION_LEAVES:
            raise ValueError(f"invalid fusion topic leaf {leaf!r}: must be one of {sorted(_FUSION_LEAVES)}")
        return f"{self.prefix}/fusion/{validate_id(fusion_id, 'fusion_id')}/{leaf}"

    def fusion_status(self, fusion_id: str) -> str:
        """Retained :class:`~nairbus.schemas.messages.Status` of a fusion agent (and its last will)."""
        return self.fusion(fusion_id, "status")

    def fusion_stats(self, fusion_id: str) -> str:
        """:class:`~nairbus.schemas.messages.Stats` of a fusion agent."""
        return self.fusion(fusion_id, "stats")

    def all_fusion(self, kind: FusionLeaf) -> str:
        """Subscription filter for one leaf of every fusion agent, e.g. ``<prefix>/fusion/+/stats``."""
        if kind not in _FUSION_LEAVES:
            raise ValueError(f"invalid fusion topic leaf {kind!r}: must be one of {sorted(_FUSION_LEAVES)}")
        return f"{self.prefix}/fusion/+/{kind}"

    def all_topics(self) -> str:
        """Subscription filter for the whole tree of this site: ``<prefix>/#``."""
        return f"{self.prefix}/#"

    # -- parsing -------------------------------------------------------------------------------------------------
    def parse(self, topic: str) -> ParsedTopic | None:
        """Take a concrete topic of this tree apart; ``None`` for anything else.

        Other roots, sites or versions, unknown or extra levels, wildcards and invalid ids all give ``None``.
        """
        head = self.prefix + "/"
        if not isinstance(topic, str) or not topic.startswith(head):
            return None
        levels = topic[len(head) :].split("/")
        match levels:
            case ["sensors", ident, leaf] if leaf in _SENSOR_LEAVES:
                kind: TopicKind = _SENSOR_KINDS[leaf]
            case ["streams", ident, leaf] if leaf in _STREAM_LEAVES:
                kind = _STREAM_KINDS[leaf]
            case ["results", ident]:
                kind = "result"
            case ["frames", ident]:
                kind = "frame"
            case ["fusion", ident, leaf] if leaf in _FUSION_LEAVES:
                kind = _FUSION_KINDS[leaf]
            case _:
                return None
        try:
            validate_id(ident)
        except ValueError:
            return None
        return ParsedTopic(kind=kind, ident=ident)
