"""Frame sources declare their own settings: each registered source's model refuses an option it does not take,
``open_source`` names the source and the option when one is missing, unknown or bad, and the flat keys of older
settings (``folder=``, ``NAIRBUS_SENSOR__FOLDER``) still reach the source."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from pydantic import ValidationError

from nairbus.agents.runtime.config import SensorSettings, load_config
from nairbus.agents.runtime.frames import SourceContext, SourceSettings
from nairbus.agents.sources import SOURCES, open_source, source_settings
from nairbus.agents.sources.folder import FolderSettings, FolderSource
from nairbus.models.architectures.registry import fashion_mnist_spec


def _ctx() -> SourceContext:
    return SourceContext(fashion_mnist_spec(), threading.Event())


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_each_sources_settings_model_refuses_an_unknown_field(name: str) -> None:
    model = SOURCES[name].settings
    assert issubclass(model, SourceSettings)
    assert all(field.description for field in model.model_fields.values()), "every option says what it is"
    with pytest.raises(ValidationError, match="not_an_option"):
        model.model_validate({"not_an_option": 1})
    with pytest.raises(ValueError, match=rf"source '{name}' .*takes no option 'not_an_option'"):
        open_source(SensorSettings(source=name, source_options={"not_an_option": 1}), _ctx())


@pytest.mark.parametrize(("name", "message"), [
    ("folder", r"source 'folder' needs a folder \(--folder DIR\)"),
    ("camera", r"source 'camera' needs a camera \(--camera 0, a stream URL or a video file\)"),
    ("image-topic", r"source 'image-topic' needs an image topic \(--image-topic TOPIC\)"),
    ("mqtt", r"source 'mqtt' needs a capture stream \(--frame-stream STREAM\)"),
])
def test_a_missing_required_option_is_a_clear_error(name: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        open_source(SensorSettings(source=name), _ctx())


def test_a_bad_option_or_an_unknown_source_names_it() -> None:
    with pytest.raises(ValueError, match=r"source 'camera' option 'camera'"):
        source_settings(SensorSettings(source="camera", camera=""))
    with pytest.raises(ValueError, match="source 'replay' takes no option 'folder'"):
        source_settings(SensorSettings(source="replay", folder="/tmp"))
    with pytest.raises(ValueError, match="unknown frame source 'nope'; registered: replay, folder"):
        open_source(SensorSettings(source="nope"), _ctx())


def test_flat_keys_and_sensor_fields_reach_the_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    flat = SensorSettings(source="folder", folder=tmp_path, watch=True)
    assert flat.source_options == {"folder": tmp_path, "watch": True}
    assert source_settings(flat) == FolderSettings(folder=tmp_path, watch=True)
    source = open_source(flat, _ctx())
    assert isinstance(source, FolderSource)
    assert source.watch
    assert source.folder == tmp_path
    # unset flat keys (a flag not given, a capture agent's defaults) are no options of any source
    assert SensorSettings(source="replay", folder=None, camera=None, watch=False).source_options == {}
    monkeypatch.setenv("NAIRBUS_SENSOR__SOURCE", "folder")
    monkeypatch.setenv("NAIRBUS_SENSOR__FOLDER", str(tmp_path))
    monkeypatch.setenv("NAIRBUS_SENSOR__WATCH", "false")
    monkeypatch.delenv("NAIRBUS_CONFIG", raising=False)
    assert source_settings(load_config().sensor) == FolderSettings(folder=tmp_path)
    replay = source_settings(SensorSettings(count=3, start=2, shard=(0, 2)))
    assert (replay.count, replay.start, replay.shard) == (3, 2, (0, 2))  # type: ignore[attr-defined]
    camera = source_settings(SensorSettings(source="camera", camera="0", count=4, source_options={"count": 2}))
    assert camera.count == 2  # type: ignore[attr-defined]  # the source's own option wins
