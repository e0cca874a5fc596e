"""Shared pytest configuration for the sekiops test suite."""

from __future__ import annotations

import pytest

# ---------------------------------------------------------------------------
# Real servers (Azurite blob, cosmosdb-server, PostgreSQL, moto for DynamoDB + S3)
#
# Session-scoped and lazy: a server starts the first time a test asks for its
# fixture, and stops (process group killed, temp dir removed) at session end.
# Each xdist worker would get its own servers.  The helpers live in
# tests/servers/launch.py; scripts/bootstrap installs what they need.
#
# Environment variables are set only by the function-scoped *_env fixtures
# (through monkeypatch), so they never leak into unrelated tests.
# Tests using a server fixture are marked azurite / cosmos / postgres / aws
# automatically, so e.g. `-m "not cosmos"` deselects them.
# ---------------------------------------------------------------------------
from servers import launch as _launch  # tests/ is on sys.path (pytest's rootdir-based import mode)

_SERVER_MARKS = {"azurite": "azurite", "cosmos_server": "cosmos", "postgres_server": "postgres",
                 "moto_server": "aws"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        for fixture_name, mark in _SERVER_MARKS.items():
            if fixture_name in getattr(item, "fixturenames", ()):
                item.add_marker(mark)


@pytest.fixture
def private_spool(tmp_path, monkeypatch):
    """A spool directory of the test's own (SEKIOPS_SPOOL_DIR); modules that want it for every test
    say ``pytestmark = pytest.mark.usefixtures("private_spool")``."""
    d = tmp_path / "spool"
    monkeypatch.setenv("SEKIOPS_SPOOL_DIR", str(d))
    return d


@pytest.fixture(scope="session")
def azurite():
    """Azurite blob service: ``.connection_string``, ``.blob_endpoint``, ``.account_name/key``."""
    server = _launch.start_azurite()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def cosmos_server():
    """cosmosdb-server over HTTPS (self-signed: don't verify): ``.endpoint``, ``.key``."""
    server = _launch.start_cosmos()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_server():
    """Throwaway PostgreSQL with database ``sekiops``: ``.url`` (libpq URL), ``.dsn``."""
    server = _launch.start_postgres()
    yield server
    server.stop()


@pytest.fixture
def azure_storage_env(azurite, monkeypatch):
    """Set AZURE_STORAGE_CONNECTION_STRING to Azurite for this test only."""
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite.connection_string)
    return azurite


@pytest.fixture
def cosmos_env(cosmos_server, monkeypatch):
    """Set COSMOS_ENDPOINT and COSMOS_KEY to cosmosdb-server for this test only."""
    monkeypatch.setenv("COSMOS_ENDPOINT", cosmos_server.endpoint)
    monkeypatch.setenv("COSMOS_KEY", cosmos_server.key)
    return cosmos_server


@pytest.fixture(scope="session")
def moto_server():
    """moto's standalone server (DynamoDB + S3 over HTTP): ``.endpoint``, ``.env``, ``.client(service)``."""
    server = _launch.start_moto()
    yield server
    server.stop()


@pytest.fixture
def aws_env(moto_server, monkeypatch):
    """Set the AWS credential chain (throwaway keys, region) to reach moto, for this test only.

    Profiles, roles and the instance metadata service are kept out of reach.
    """
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE",
                 "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        monkeypatch.delenv(name, raising=False)
    for name, value in moto_server.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return moto_server


# ----------------------------- end of server fixtures ----------------------
