# nairbus agents (sensor, fusion, watch, ...): one image, the sub-command picks the agent.
#
#   docker build -t nairbus .                                  # the production image (target "nairbus")
#   docker build --build-arg EXTRAS=hub,camera -t nairbus:camera .  # with OpenCV, for a sensor that reads a camera
#   docker build --build-arg EXTRAS= -t nairbus:sensor .        # the sensor-only install: no torch (--runtime onnx)
#   docker build --target demo -t nairbus:demo .               # plus the Fashion-MNIST data set the replay demo reads
#   docker build --target sensor -t nairbus:sensor .           # the light sensor with base's exported device parts
#   docker run --rm nairbus --help
#
# The production image holds nairbus installed as a user installs it — a virtual environment in /opt/nairbus/.venv
# (where the systemd units look) with a non-editable `pip install '.[hub]'` of the package and the pinned
# torch==2.13.0 — and nothing else: no test tools, no broker, no data set. PIP_EXTRA_INDEX_URL points pip at
# PyTorch's CPU wheel index so that pin resolves to the CPU build (2.13.0+cpu) instead of the multi-GB CUDA one;
# override TORCH_INDEX_URL to use a mirror. The demo stage adds the Debian data set compose.yaml's replays read. The
# sensor stage is the light sensor a device runs: the sensor-only install (no torch, no plots) and the device parts
# of the shipped model that the hub image exports (`nairbus export-onnx`), found through NAIRBUS_MODEL_DIR; the
# sensor-demo stage adds the data set its replay reads.
FROM python:3.11-slim AS nairbus

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG EXTRAS="hub"
ENV PIP_EXTRA_INDEX_URL=${TORCH_INDEX_URL} \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    NAIRBUS_LOG__FORMAT=json

WORKDIR /opt/nairbus
COPY pyproject.toml README.md /tmp/nairbus-src/
COPY agents /tmp/nairbus-src/agents
COPY models /tmp/nairbus-src/models
COPY schemas /tmp/nairbus-src/schemas
COPY broker /tmp/nairbus-src/broker
RUN python -m venv /opt/nairbus/.venv \
    && PYTHONWARNINGS=ignore /opt/nairbus/.venv/bin/pip install "/tmp/nairbus-src${EXTRAS:+[$EXTRAS]}" \
    && rm -rf /tmp/nairbus-src \
    && useradd --system --uid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin nairbus

# No root at run time; the compose file also makes the file system read-only and drops every capability.
USER 10001:10001
ENV HOME=/tmp
ENTRYPOINT ["/opt/nairbus/.venv/bin/nairbus"]
CMD ["--help"]

# The replay demo of compose.yaml: the same image plus the Fashion-MNIST data set from Debian.
FROM nairbus AS demo
USER root
RUN apt-get update \
    && apt-get install -y --no-install-recommends dataset-fashion-mnist \
    && rm -rf /var/lib/apt/lists/*
USER 10001:10001

# What a device runs of the shipped model, exported by the hub image: ONNX parts, manifest, NAIR artifacts, tables.
FROM nairbus AS device-parts
RUN /opt/nairbus/.venv/bin/nairbus export-onnx --model base --out-dir /tmp/device

# The light sensor: `pip install nairbus` (no extras: no torch) and the parts the hub exported.
FROM python:3.11-slim AS sensor
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    NAIRBUS_LOG__FORMAT=json \
    NAIRBUS_MODEL_DIR=/opt/nairbus/models
WORKDIR /opt/nairbus
COPY pyproject.toml README.md /tmp/nairbus-src/
COPY agents /tmp/nairbus-src/agents
COPY models /tmp/nairbus-src/models
COPY schemas /tmp/nairbus-src/schemas
COPY broker /tmp/nairbus-src/broker
RUN python -m venv /opt/nairbus/.venv \
    && PYTHONWARNINGS=ignore /opt/nairbus/.venv/bin/pip install /tmp/nairbus-src \
    && rm -rf /tmp/nairbus-src \
    && useradd --system --uid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin nairbus
COPY --from=device-parts /tmp/device /opt/nairbus/models
USER 10001:10001
ENV HOME=/tmp
ENTRYPOINT ["/opt/nairbus/.venv/bin/nairbus"]
CMD ["sensor", "--help"]

# compose.yaml's replaying light sensors: the sensor image plus the Fashion-MNIST data set from Debian.
FROM sensor AS sensor-demo
USER root
RUN apt-get update \
    && apt-get install -y --no-install-recommends dataset-fashion-mnist \
    && rm -rf /var/lib/apt/lists/*
USER 10001:10001
