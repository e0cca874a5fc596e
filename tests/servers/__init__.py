"""Throwaway servers for the test suite: Azurite (blob), cosmosdb-server, PostgreSQL.

See :mod:`launch` for the helpers; ``tests/conftest.py`` exposes them as
session-scoped pytest fixtures.
"""
