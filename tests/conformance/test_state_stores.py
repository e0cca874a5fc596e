"""The shipped state store conformance suite (sekiops.testing), run on every built-in backend
against real servers: memory, SQLite, PostgreSQL, Cosmos DB (cosmosdb-server), DynamoDB (moto)."""

from __future__ import annotations

import pytest

from sekiops.testing import StateStoreConformance

from .stores import state_opener


class TestMemory(StateStoreConformance):
    def make_opener(self, request, tmp_path):
        return state_opener("memory", request, tmp_path)


class TestSqlite(StateStoreConformance):
    offload_options = {"record_threshold": 10}  # Sekiban's SQLite store is strict; sekiops' extension

    def make_opener(self, request, tmp_path):
        return state_opener("sqlite", request, tmp_path)


@pytest.mark.postgres
class TestPostgres(StateStoreConformance):
    def make_opener(self, request, tmp_path):
        return state_opener("postgres", request, tmp_path)


@pytest.mark.cosmos
class TestCosmos(StateStoreConformance):
    def make_opener(self, request, tmp_path):
        return state_opener("cosmos", request, tmp_path)


@pytest.mark.aws
class TestDynamoDb(StateStoreConformance):
    def make_opener(self, request, tmp_path):
        return state_opener("dynamodb", request, tmp_path)
