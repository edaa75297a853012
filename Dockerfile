# nairbus agents (sensor, fusion, watch, ...): one image, the sub-command picks the agent.
#
#   docker build -t nairbus .
#   docker run --rm nairbus --help
#
# Installs exactly the way the README does, with ./setup.sh: Debian packages (the Fashion-MNIST data set the replay
# sensors read, Mosquitto's clients), then a virtual environment in /opt/nairbus/.venv with nairbus and the pinned
# torch==2.13.0 from pyproject.toml — the same path the systemd units use. PIP_EXTRA_INDEX_URL points pip at
# PyTorch's CPU wheel index so that pin resolves to the CPU build (2.13.0+cpu) instead of the multi-GB CUDA one;
# override TORCH_INDEX_URL to use a mirror.
FROM python:3.11-slim

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_EXTRA_INDEX_URL=${TORCH_INDEX_URL} \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    NAIRBUS_LOG__FORMAT=json

WORKDIR /opt/nairbus
COPY . .
RUN ./setup.sh \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin nairbus

# No root at run time; the compose file also makes the file system read-only and drops every capability.
USER 10001:10001
ENV HOME=/tmp
ENTRYPOINT ["/opt/nairbus/.venv/bin/nairbus"]
CMD ["--help"]
