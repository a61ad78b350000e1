"""Which statements the SQL node treats as reads (a doubtful one counts as a write against storage quota)."""

from __future__ import annotations

import pytest

from nexus.nodes.sql import is_read_only


@pytest.mark.parametrize(
    "query",
    [
        "SELECT * FROM ${tenant_id}.customer_data WHERE id = :customer_id",
        "  select 1",
        "(SELECT 1) UNION (SELECT 2)",
        "WITH recent AS (SELECT * FROM t) SELECT * FROM recent",
        "SELECT 'insert into x' AS words, \"update\" FROM t -- delete\n",
        "SELECT /* DROP TABLE t */ 1",
        "VALUES (1), (2)",
        "SELECT * FROM settings",
    ],
)
def test_reads(query: str) -> None:
    assert is_read_only(query)


@pytest.mark.parametrize(
    "query",
    [
        "INSERT INTO t VALUES (1)",
        "UPDATE t SET a = 1",
        "DELETE FROM t",
        "CREATE TABLE t (a int)",
        "SELECT * INTO copy FROM t",
        "WITH gone AS (DELETE FROM t RETURNING *) SELECT * FROM gone",
        "SELECT * FROM t FOR UPDATE",
        "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE",
        "CALL refresh_all()",
        "COPY t FROM STDIN",
        "EXPLAIN ANALYZE DELETE FROM t",
    ],
)
def test_writes_and_doubtful_statements(query: str) -> None:
    assert not is_read_only(query)
