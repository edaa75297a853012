"""compose.yaml and the Dockerfile, checked without Docker (it cannot run here): the file parses, names the services,
images, volumes, health check and secrets it must, every secret file it mounts is one deploy/compose/init-secrets.sh
creates, and the image installs nairbus the way the README and CI do (./setup.sh)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SENSORS = ("sensor-1", "sensor-2", "sensor-3")
AGENTS = ("fusion", *SENSORS)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((REPO / "compose.yaml").read_text())
    assert isinstance(data, dict)
    return data


def test_services_images_and_volumes(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"mosquitto", "fusion", *SENSORS} <= set(services)
    broker = services["mosquitto"]
    assert re.fullmatch(r"eclipse-mosquitto:2(\.\d+){2}", broker["image"]), "pin an exact Mosquitto 2 release"
    mounts = {m.split(":")[1]: m.split(":")[0] for m in broker["volumes"]}
    assert mounts["/mosquitto/config/mosquitto.conf"] == "./broker/mosquitto.prod.conf"
    assert mounts["/etc/mosquitto/nairbus"] == "./deploy/compose/secrets/broker"  # the prod config's install dir
    assert mounts["/var/lib/mosquitto"] == "mosquitto-data"  # the prod config's persistence_location
    assert "mosquitto-data" in compose["volumes"]
    assert broker["command"][-1] == "/mosquitto/config/mosquitto.conf"
    prod = (REPO / "broker/mosquitto.prod.conf").read_text()
    assert "persistence_location /var/lib/mosquitto/" in prod
    assert "password_file /etc/mosquitto/nairbus/passwd" in prod


def test_broker_health_check(compose: dict[str, Any]) -> None:
    check = compose["services"]["mosquitto"]["healthcheck"]
    command = " ".join(check["test"])
    assert check["test"][0] == "CMD-SHELL"
    assert "mosquitto_sub" in command
    assert "-E" in command
    assert "-P" not in command  # the login comes from the options file, not the command line
    assert "$$SYS/broker/uptime" in command  # $$ is compose's escape for a literal $
    assert all(key in check for key in ("interval", "timeout", "retries"))
    acl = (REPO / "broker/acl").read_text()
    assert "user health.probe\ntopic read $SYS/broker/uptime" in acl


def test_agents_are_built_from_the_dockerfile_and_wait_for_a_healthy_broker(compose: dict[str, Any]) -> None:
    for name in AGENTS:
        service = compose["services"][name]
        if name in SENSORS:  # the light sensor: no torch, the hub's exported parts (issue 34)
            assert service["build"] == {"context": ".", "dockerfile": "Dockerfile", "target": "sensor-demo"}
            assert service["image"] == "nairbus:sensor"
            assert service["command"][service["command"].index("--runtime") + 1] == "onnx"
        else:
            assert service["build"] == {"context": ".", "dockerfile": "Dockerfile", "target": "demo"}
            assert service["image"] == "nairbus:local"
        assert service["depends_on"]["mosquitto"]["condition"] == "service_healthy"
        assert service["read_only"] is True
        assert service["cap_drop"] == ["ALL"]
        env = service["environment"]
        assert env["NAIRBUS_BROKER__HOST"] == "mosquitto"
        assert env["NAIRBUS_BROKER__PORT"] == "8883"
        assert "NAIRBUS_BROKER__PASSWORD" not in env  # only the file
        user = env["NAIRBUS_BROKER__USERNAME"]
        for key, suffix in (("PASSWORD_FILE", "password"), ("TLS_CERT", "crt"), ("TLS_KEY", "key")):
            assert env[f"NAIRBUS_BROKER__{key}"] == f"/run/secrets/{user}.{suffix}"
            assert f"{user}.{suffix}" in service["secrets"]
    assert compose["services"]["fusion"]["command"] == ["fusion"]
    sensor_ids = [compose["services"][s]["command"][2] for s in SENSORS]
    assert sensor_ids == ["cam-1", "cam-2", "cam-3"]
    assert [compose["services"][s]["environment"]["NAIRBUS_BROKER__USERNAME"] for s in SENSORS] == sensor_ids


def test_every_mounted_secret_is_created_by_the_init_script(compose: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "secrets"
    subprocess.run(["bash", str(REPO / "deploy/compose/init-secrets.sh"), str(out)], check=True,
                   capture_output=True, timeout=60)
    prefix = "./deploy/compose/secrets/"
    for name, secret in compose["secrets"].items():
        assert secret["file"].startswith(prefix), name
        assert (out / secret["file"][len(prefix):]).is_file(), f"init-secrets.sh does not create {secret['file']}"
    for name in ("passwd", "acl", "ca.crt", "server.crt", "server.key", "health/mosquitto_sub"):
        assert (out / "broker" / name).is_file(), name
    assert not (out / "broker" / "ca.key").exists()  # the CA key is not mounted into the broker container
    users = {line.split(":")[0] for line in (out / "broker/passwd").read_text().splitlines()}
    assert users == {"cam-1", "cam-2", "cam-3", "cam-own", "fusion.fusion-1", "watch.results", "health.probe"}


def test_the_production_image_holds_nairbus_and_nothing_else() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    stages = re.split(r"^FROM ", dockerfile, flags=re.MULTILINE)[1:]
    assert [stage.split()[0:3] for stage in stages] == [["python:3.11-slim", "AS", "nairbus"],
                                                        ["nairbus", "AS", "demo"],
                                                        ["nairbus", "AS", "device-parts"],
                                                        ["python:3.11-slim", "AS", "sensor"],
                                                        ["sensor", "AS", "sensor-demo"]]
    production, demo, parts, sensor, sensor_demo = stages
    assert "nairbus export-onnx --model base --out-dir /tmp/device" in parts  # the hub exports what a device runs
    assert "pip install /tmp/nairbus-src \\" in sensor  # no extras: no torch, no plots
    assert "COPY --from=device-parts /tmp/device /opt/nairbus/models" in sensor
    assert "NAIRBUS_MODEL_DIR=/opt/nairbus/models" in sensor
    assert re.search(r"^USER 10001", sensor, re.MULTILINE)
    assert "dataset-fashion-mnist" in sensor_demo
    assert "dataset-fashion-mnist" not in sensor
    assert re.search(r"^WORKDIR /opt/nairbus$", production, re.MULTILINE)  # .venv where the systemd units look
    assert "pip install \"/tmp/nairbus-src${EXTRAS:+[$EXTRAS]}\"" in production  # non-editable, no test extras
    assert re.search(r'^ARG EXTRAS="hub"$', production, re.MULTILINE)  # torch for fusion; EXTRAS= builds a sensor
    for absent in ("setup.sh", "mosquitto", "dataset-fashion-mnist", "pytest", "[test", "-e "):
        assert absent not in production, absent
    assert "PIP_EXTRA_INDEX_URL=${TORCH_INDEX_URL}" in production
    assert "/whl/cpu" in production
    assert '"torch==2.13.0"' in (REPO / "pyproject.toml").read_text()  # the pin pip installs, CPU build here
    assert re.search(r"^USER 10001", production, re.MULTILINE)
    assert 'ENTRYPOINT ["/opt/nairbus/.venv/bin/nairbus"]' in production
    assert "dataset-fashion-mnist" in demo  # only the replay demo carries the data set
    assert "mosquitto" not in demo
    assert re.search(r"^USER 10001", demo, re.MULTILINE)
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".venv", ".git", "deploy/compose/secrets"} <= set(ignored)


def test_the_own_model_example_mounts_a_model_directory_and_one_camera(compose: dict[str, Any]) -> None:
    own = compose["services"]["own-model"]
    assert own["profiles"] == ["own-model"]
    assert own["build"]["target"] == "nairbus"  # the production image, with OpenCV
    assert own["build"]["args"] == {"EXTRAS": "hub,camera"}
    assert own["devices"] == ["/dev/video0:/dev/video0"]
    assert own["volumes"] == ["./my-models:/models:ro"]
    assert own["environment"]["NAIRBUS_MODEL_DIR"] == "/models"
    command = own["command"]
    assert command[command.index("--model") + 1] == "mine"
    assert command[command.index("--camera") + 1] == "0"
    assert own["read_only"] is True
    assert own["cap_drop"] == ["ALL"]
    assert own["environment"]["NAIRBUS_BROKER__USERNAME"] == command[command.index("--sensor-id") + 1]
