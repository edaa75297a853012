"""The topic tree: build/parse round trips, wildcard filters, rejection of bad ids and foreign topics."""

from __future__ import annotations

from collections.abc import Callable
from typing import get_args

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nairbus.schemas.ids import is_valid_id
from nairbus.schemas.topics import TOPIC_VERSION, ParsedTopic, SensorLeaf, TopicKind, TopicTree
from tests.schemas.strategies import ids, roots

trees = st.builds(TopicTree, root=roots, site=ids)
bad_ids = st.text(max_size=70).filter(lambda s: not is_valid_id(s)) | st.sampled_from(
    ["", "+", "#", "a/b", "a+", "x#", "$SYS", "a b", "a\n", "ü", "x" * 65, "a/"]
)

BUILDERS: dict[TopicKind, Callable[[TopicTree, str], str]] = {
    "sensor_status": TopicTree.sensor_status,
    "sensor_birth": TopicTree.sensor_birth,
    "sensor_frag": TopicTree.sensor_frag,
    "sensor_topk": TopicTree.sensor_topk,
    "sensor_image": TopicTree.sensor_image,
    "sensor_item": TopicTree.sensor_item,
    "sensor_set": TopicTree.sensor_set,
    "sensor_response": TopicTree.sensor_response,
    "sensor_controls": TopicTree.sensor_controls,
    "stream_state": lambda tree, ident: tree.stream(ident, "state"),
    "stream_metrics": lambda tree, ident: tree.stream(ident, "metrics"),
    "stream_events": lambda tree, ident: tree.stream(ident, "events"),
    "stream_availability": lambda tree, ident: tree.stream(ident, "availability"),
    "result": TopicTree.result,
    "fusion_status": TopicTree.fusion_status,
    "fusion_stats": TopicTree.fusion_stats,
    "fusion_set": lambda tree, ident: tree.fusion(ident, "set"),
    "fusion_response": lambda tree, ident: tree.fusion(ident, "response"),
    "frame": TopicTree.frames,
}


def mqtt_matches(topic_filter: str, topic: str) -> bool:
    """MQTT filter matching (``+`` one level, ``#`` the rest), enough to check the wildcard builders."""
    f_levels, t_levels = topic_filter.split("/"), topic.split("/")
    for i, level in enumerate(f_levels):
        if level == "#":
            return True
        if i >= len(t_levels) or (level not in ("+", t_levels[i])):
            return False
    return len(f_levels) == len(t_levels)


def test_default_layout() -> None:
    tree = TopicTree()
    assert TOPIC_VERSION == "v1"
    assert tree.sensor_status("cam-01") == "nairbus/v1/default/sensors/cam-01/status"
    assert tree.sensor_birth("cam-01") == "nairbus/v1/default/sensors/cam-01/birth"
    assert tree.sensor_frag("cam-01") == "nairbus/v1/default/sensors/cam-01/frag"
    assert tree.sensor_topk("cam-01") == "nairbus/v1/default/sensors/cam-01/topk"
    assert tree.sensor_image("cam-01") == "nairbus/v1/default/sensors/cam-01/image"
    assert tree.sensor("cam-01", "image") == tree.sensor_image("cam-01")
    assert tree.frames("s1") == "nairbus/v1/default/frames/s1"
    assert tree.result("s1") == "nairbus/v1/default/results/s1"
    assert tree.fusion_status("f") == "nairbus/v1/default/fusion/f/status"
    assert tree.fusion_stats("f") == "nairbus/v1/default/fusion/f/stats"
    assert tree.all_sensors("frag") == "nairbus/v1/default/sensors/+/frag"
    assert tree.all_sensors("image") == "nairbus/v1/default/sensors/+/image"
    assert tree.all_frames() == "nairbus/v1/default/frames/+"
    assert tree.all_results() == "nairbus/v1/default/results/+"
    assert tree.all_fusion("stats") == "nairbus/v1/default/fusion/+/stats"
    assert tree.all_topics() == "nairbus/v1/default/#"


def test_multi_segment_root() -> None:
    tree = TopicTree(root="lab/x_1/nairbus", site="bench-2")
    topic = tree.sensor_frag("s")
    assert topic == "lab/x_1/nairbus/v1/bench-2/sensors/s/frag"
    assert tree.parse(topic) == ParsedTopic(kind="sensor_frag", ident="s")


def test_tree_is_frozen() -> None:
    tree = TopicTree()
    with pytest.raises(AttributeError):
        tree.root = "other"  # type: ignore[misc]


@given(tree=trees, ident=ids, kind=st.sampled_from(sorted(BUILDERS)))
def test_build_parse_round_trip(tree: TopicTree, ident: str, kind: TopicKind) -> None:
    topic = BUILDERS[kind](tree, ident)
    assert tree.parse(topic) == ParsedTopic(kind=kind, ident=ident)
    assert "+" not in topic
    assert "#" not in topic


SENSOR_LEAVES: list[SensorLeaf] = ["status", "birth", "frag", "topk", "image", "item", "set", "response", "controls"]


def test_every_topic_kind_and_leaf_is_covered() -> None:
    assert set(BUILDERS) == set(get_args(TopicKind))
    assert set(SENSOR_LEAVES) == set(get_args(SensorLeaf))


def test_image_leaf_parses() -> None:
    tree = TopicTree(root="lab", site="bench")
    assert tree.parse("lab/v1/bench/sensors/cam-01/image") == ParsedTopic(kind="sensor_image", ident="cam-01")
    for topic in ("lab/v1/bench/sensors/cam-01/images", "lab/v1/bench/sensors/cam-01/Image",
                  "lab/v1/bench/sensors/cam-01/image/x", "lab/v1/bench/sensors/+/image", "lab/v1/bench/image/cam-01",
                  "lab/v1/bench/fusion/f/image", "lab/v1/bench/results/image/x"):
        assert tree.parse(topic) is None, topic


@given(tree=trees, ident=ids, leaf=st.sampled_from(SENSOR_LEAVES))
def test_sensor_wildcards_match_only_their_leaf(tree: TopicTree, ident: str, leaf: SensorLeaf) -> None:
    topic = tree.sensor(ident, leaf)
    for other in SENSOR_LEAVES:
        assert mqtt_matches(tree.all_sensors(other), topic) == (other == leaf)
    assert mqtt_matches(tree.all_topics(), topic)
    assert not mqtt_matches(tree.all_results(), topic)


@given(tree=trees, ident=ids)
def test_result_and_fusion_wildcards(tree: TopicTree, ident: str) -> None:
    assert mqtt_matches(tree.all_results(), tree.result(ident))
    assert mqtt_matches(tree.all_fusion("status"), tree.fusion_status(ident))
    assert not mqtt_matches(tree.all_fusion("status"), tree.fusion_stats(ident))


@given(tree=trees, bad=bad_ids, kind=st.sampled_from(sorted(BUILDERS)))
def test_builders_reject_bad_ids(tree: TopicTree, bad: str, kind: TopicKind) -> None:
    with pytest.raises(ValueError, match="must be 1-64 characters"):
        BUILDERS[kind](tree, bad)


@given(bad=bad_ids)
def test_tree_rejects_bad_site(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid site"):
        TopicTree(site=bad)


@pytest.mark.parametrize("root", ["", "/", "a/", "/a", "a//b", "a/+", "#", "a/b#", "$SYS", "x" * 65, "a b"])
def test_tree_rejects_bad_root(root: str) -> None:
    with pytest.raises(ValueError, match="invalid topic root"):
        TopicTree(root=root)


def test_bad_leaves_rejected() -> None:
    tree = TopicTree()
    with pytest.raises(ValueError, match="leaf"):
        tree.all_sensors("result")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="leaf"):
        tree.sensor("s", "stats")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="leaf"):
        tree.fusion("f", "frag")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="leaf"):
        tree.fusion("f", "image")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="leaf"):
        tree.sensor("s", "frame")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "topic",
    [
        "nairbus/v1/default/sensors/s1/frag/extra",
        "nairbus/v1/default/sensors/s1",
        "nairbus/v1/default/sensors/s1/stats",
        "nairbus/v1/default/sensors/+/frag",
        "nairbus/v1/default/sensors//frag",
        "nairbus/v1/default/results/s1/x",
        "nairbus/v1/default/results/#",
        "nairbus/v1/default/results/",
        "nairbus/v1/default/fusion/f/frag",
        "nairbus/v1/default/fusion/f/image",
        "nairbus/v1/default/sensors/s1/image/extra",
        "nairbus/v1/default/sensors/s1/frame",
        "nairbus/v1/default/frames/s1/x",
        "nairbus/v1/default/frames/+",
        "nairbus/v1/default/fusion/f",
        "nairbus/v1/default/other/f/status",
        "nairbus/v2/default/sensors/s1/frag",
        "nairbus/v1/other/sensors/s1/frag",
        "other/v1/default/sensors/s1/frag",
        "x/nairbus/v1/default/sensors/s1/frag",
        "/nairbus/v1/default/sensors/s1/frag",
        "nairbus/v1/default",
        "nairbus/v1/default/",
        "",
    ],
)
def test_parse_rejects_foreign_topics(topic: str) -> None:
    assert TopicTree().parse(topic) is None


@given(tree=trees, topic=st.text(max_size=120) | st.lists(st.text(max_size=8), max_size=8).map("/".join))
def test_parse_never_raises_and_is_consistent(tree: TopicTree, topic: str) -> None:
    parsed = tree.parse(tree.prefix + "/" + topic)
    if parsed is not None:
        assert BUILDERS[parsed.kind](tree, parsed.ident) == tree.prefix + "/" + topic
    assert tree.parse(topic) is None or topic.startswith(tree.prefix + "/")


@given(tree=trees, other=trees, ident=ids, kind=st.sampled_from(sorted(BUILDERS)))
def test_parse_of_other_trees_is_none_or_exact(tree: TopicTree, other: TopicTree, ident: str, kind: TopicKind) -> None:
    # Roots may hold several levels, so a contrived pair of trees (root "r", site "v1" against root "r/v1", site
    # "sensors") can share topics; whatever parse accepts must rebuild to exactly the same topic.
    topic = BUILDERS[kind](other, ident)
    parsed = tree.parse(topic)
    if parsed is not None:
        assert BUILDERS[parsed.kind](tree, parsed.ident) == topic
    if other.root == tree.root and other.site != tree.site:
        assert parsed is None
