"""The audit appender process: group commit for a SQLite file, outside the server's interpreter.

The server writes one JSON array per audit row to this process's stdin; it reads whatever has
arrived and, in one transaction that holds SQLite's write lock, extends the hash chain over those
rows, inserts them with one multi-row INSERT and moves the chain's tail (commit and fsync
together), then answers "ok N" or "err N reason" for those N rows, in order. Running apart means
the commit never competes with request handling for the GIL. Imports only the standard library,
orjson and `nexus.core.audit_chain` (itself standard library only), so it starts fast and stays small.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import sys
from typing import Any

import orjson

from nexus.core.audit_chain import extend

SQLITE_PRAGMAS = (
    "PRAGMA busy_timeout=5000",
    "PRAGMA journal_mode=WAL",
    # A call whose response was sent must have its audit record on disk: fsync every commit.
    "PRAGMA synchronous=FULL",
    "PRAGMA foreign_keys=ON",
)
# Below the allocator's mmap threshold (128 KiB), so a read costs no mmap/munmap system calls.
_READ_BYTES = 1 << 16


def _connect(database: str) -> sqlite3.Connection:
    connection = sqlite3.connect(database, isolation_level=None, check_same_thread=False)
    for pragma in SQLITE_PRAGMAS:
        connection.execute(pragma)
    return connection


class _Appender:
    def __init__(self, config: dict[str, Any]) -> None:
        self._database: str = config["database"]
        self._head: str = config["head"]
        self._row: str = config["row"]
        self._per_statement: int = config["rows_per_statement"]
        self._tail: str = config["tail"]
        self._advance: str = config["advance"]
        self._statements: dict[int, str] = {}
        self._connection: sqlite3.Connection | None = None

    def _statement(self, count: int) -> str:
        statement = self._statements.get(count)
        if statement is None:
            statement = self._statements[count] = self._head + ", ".join([self._row] * count)
        return statement

    def append(self, rows: list[list[Any]]) -> str:
        """Insert `rows`, one transaction per statement; one answer line per statement, in order."""
        answers = []
        for start in range(0, len(rows), self._per_statement):
            chunk = rows[start : start + self._per_statement]
            try:
                if self._connection is None:
                    self._connection = _connect(self._database)
                self._commit(self._connection, chunk)
            except Exception as exc:  # noqa: BLE001  # reported to the server, which fails those calls
                if self._connection is not None:
                    self._connection.close()
                    self._connection = None
                reason = f"{type(exc).__name__}: {exc}".replace("\n", " ")[:300]
                answers.append(f"err {len(chunk)} {reason}\n")
            else:
                answers.append(f"ok {len(chunk)}\n")
        return "".join(answers)

    def _commit(self, connection: sqlite3.Connection, chunk: list[list[Any]]) -> None:
        """Chain and insert `chunk` in one transaction; on a failure the caller closes the
        connection, which rolls it back."""
        connection.execute("BEGIN IMMEDIATE")  # the write lock first: no other writer moves the tail
        tail_seq, tail_hash = connection.execute(self._tail).fetchone()
        links = extend(tail_seq, tail_hash, chunk)
        values = [value for row, link in zip(chunk, links, strict=True) for value in (*row, *link)]
        connection.execute(self._statement(len(chunk)), values)
        connection.execute(self._advance, (links[-1][0], links[-1][2]))
        connection.execute("COMMIT")


def _next_lines(fd: int, pending: bytes) -> tuple[list[bytes], bytes] | None:
    """Every complete line available (reading until there is one) and the rest; None at end of input.

    Raw reads only: a buffered reader could hold back rows that already arrived.
    """
    while b"\n" not in pending:
        data = os.read(fd, _READ_BYTES)
        if not data:
            return None
        pending += data
    complete, _, rest = pending.rpartition(b"\n")
    return complete.split(b"\n"), rest


def _answer(appender: _Appender, lines: list[bytes]) -> str:
    try:
        rows = [orjson.loads(line) for line in lines]
    except orjson.JSONDecodeError:
        return f"err {len(lines)} unreadable audit row\n"
    return appender.append(rows)


def main() -> int:
    # Ctrl-C reaches the whole process group; the server decides when this process ends, by
    # closing its stdin (or by dying, which closes it too), so the rows already sent are committed.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
    read = _next_lines(stdin, b"")
    if read is None:
        return 0
    (config, *lines), pending = read
    appender = _Appender(orjson.loads(config))
    while True:
        if lines:
            os.write(stdout, _answer(appender, lines).encode())
        read = _next_lines(stdin, pending)
        if read is None:
            return 0
        lines, pending = read


if __name__ == "__main__":
    raise SystemExit(main())
