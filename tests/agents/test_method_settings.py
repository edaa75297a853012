"""Methods declare their own sensor settings: each registered method's model refuses an option it does not take,
``METHODS.for_sensor`` names the mode and the option, a VP sensor without a variant gets the message it always got,
and the flat keys of older settings (``variant=``, ``NAIRBUS_SENSOR__VARIANT``, a config file's ``k``) are moved into
``method_options``."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from nairbus.agents.methods import METHODS
from nairbus.agents.nair.settings import LossSettings, NairSettings, nair_settings
from nairbus.agents.runtime.config import FLAT_METHOD_KEYS, SensorSettings, load_config
from nairbus.agents.runtime.methods import MethodSettings
from nairbus.agents.vp.settings import VpSettings, vp_settings


@pytest.mark.parametrize("name", METHODS.names())
def test_each_methods_settings_model_refuses_an_unknown_option(name: str) -> None:
    method = METHODS.for_fusion(name)
    assert issubclass(method.settings, MethodSettings)
    assert all(field.description for field in method.settings.model_fields.values()), "every option says what it is"
    with pytest.raises(ValidationError, match="not_an_option"):
        method.settings.model_validate({"not_an_option": 1})
    mode = method.sensor_modes[0]
    with pytest.raises(ValueError, match=rf"mode '{mode}' .*takes no option 'not_an_option'"):
        METHODS.for_sensor(SensorSettings(mode=mode, method_options={"variant": "x", "not_an_option": 1}))


def test_a_vp_sensor_without_a_variant_gets_the_old_message() -> None:
    with pytest.raises(ValueError, match=r"^mode 'vp' needs a variant \(e\.g\. --variant w44r28\)$"):
        METHODS.for_sensor(SensorSettings(mode="vp"))
    with pytest.raises(ValueError, match=r"mode 'vp' option 'k'"):
        METHODS.for_sensor(SensorSettings(mode="vp", variant="w44r28", k=0))
    with pytest.raises(ValueError, match="mode 'nair' takes no option 'variant'"):
        METHODS.for_sensor(SensorSettings(mode="nair", variant="w44r28"))
    with pytest.raises(ValueError, match="image_codecs needs at least one codec"):
        METHODS.for_sensor(SensorSettings(mode="image", image_codecs=()))


def test_flat_keys_are_moved_and_defaults_dropped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    vp = SensorSettings(mode="vp", variant="w44r28", k=3, frame_stream="cam")
    assert vp.method_options == {"variant": "w44r28", "k": 3, "frame_stream": "cam"}
    assert vp_settings(vp) == VpSettings(variant="w44r28", k=3, frame_stream="cam")
    # flat keys left at their default (a flag not given, an old config's k = 5) are no option of any method
    nair = SensorSettings(mode="nair", variant=None, k=5, artifact=None, fragments_by_plan=False,
                          loss=LossSettings(), image_codecs=NairSettings().image_codecs)
    assert nair.method_options == {}
    loss = SensorSettings(artifact=tmp_path / "a.npz", fragments_by_plan=True, loss={"kind": "random", "rate": 0.2})
    assert nair_settings(loss) == NairSettings(artifact=tmp_path / "a.npz", fragments_by_plan=True,
                                               loss=LossSettings(kind="random", rate=0.2))
    # a command's round trip keeps them
    assert SensorSettings.model_validate(vp.model_dump()) == vp
    monkeypatch.delenv("NAIRBUS_CONFIG", raising=False)
    config = tmp_path / "sensor.toml"
    config.write_text('[sensor]\nmode = "vp"\nvariant = "w44r28"\nk = 4\n')
    monkeypatch.setenv("NAIRBUS_SENSOR__VARIANT", "w36r24")
    monkeypatch.setenv("NAIRBUS_SENSOR__FRAGMENTS_BY_PLAN", "false")
    loaded = load_config(config).sensor  # the environment above the file, a flag above both
    assert loaded.method_options == {"variant": "w36r24", "k": 4}
    assert load_config(config, {"sensor": {"k": 5}}).sensor.method_options == {"variant": "w36r24", "k": 5}
    monkeypatch.delenv("NAIRBUS_SENSOR__VARIANT")
    monkeypatch.setenv("NAIRBUS_SENSOR__IMAGE_CODECS", '["png"]')
    assert nair_settings(load_config(None, {"sensor": {"mode": "image"}}).sensor).image_codecs == ("png",)


@pytest.mark.parametrize(("key", "model"), [(key, model) for model in (VpSettings, NairSettings)
                                            for key in model.model_fields])
def test_the_flat_keys_defaults_are_the_methods(key: str, model: type[MethodSettings]) -> None:
    assert key in FLAT_METHOD_KEYS
    default = model.model_fields[key].default
    if (key, model) == ("k", NairSettings):
        # ``k`` is shared: the flat key keeps VP's default (5), which older files said for NAIR sensors too; the
        # decision mode, newer than flat keys, takes its k from a flag or its method options.
        assert (FLAT_METHOD_KEYS[key], default) == (5, 1)
    elif key != "variant":
        expected = default.model_dump() if isinstance(default, LossSettings) else default
        assert FLAT_METHOD_KEYS[key] == expected
