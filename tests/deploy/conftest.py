"""Fixtures for the deployment tests: one private broker running the production config for the whole directory."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.deploy.secure import SecureBroker


@pytest.fixture(scope="session")
def secure() -> Iterator[SecureBroker]:
    """broker/mosquitto.prod.conf + broker/acl on a private Mosquitto, with users and certificates from broker/scripts."""
    with SecureBroker() as broker:
        yield broker
