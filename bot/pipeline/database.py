"""The bot's one SQLite file: a connection in WAL mode, and each feature's tables brought up to date on open.

Each feature keeps its own schema (a `Schema` of scripts, append-only) and its own version in the
`schema_versions` table, so features add tables without knowing of each other. A database written before features
kept their own versions (one PRAGMA user_version for every table) is recognised and carried over.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiosqlite


class StoreError(RuntimeError):
    """The database is unusable (e.g. written by a newer sdbot)."""


@dataclass(frozen=True)
class Schema:
    """One feature's tables: the scripts that take them from version i to i + 1. Append, never edit."""

    feature: str
    steps: tuple[str, ...]


# PRAGMA user_version of a database whose features keep their own versions; an sdbot from before the split reads it
# as a schema newer than it knows, and refuses the file instead of half-using it.
PER_FEATURE = 100
# A database from before the split: each feature's version after the one shared version, as those scripts ran.
LEGACY_VERSIONS: Mapping[int, Mapping[str, int]] = {
    0: {},
    1: {"jobs": 1},
    2: {"jobs": 2},
    3: {"jobs": 3, "limits": 1},
    4: {"jobs": 4, "limits": 1},
    5: {"jobs": 4, "limits": 1, "models": 1},
    6: {"jobs": 5, "limits": 1, "models": 1, "policy": 1},
    7: {"jobs": 5, "limits": 1, "models": 1, "policy": 1, "community": 1},
    8: {"jobs": 5, "limits": 2, "models": 1, "policy": 1, "community": 1},
    9: {"jobs": 6, "limits": 2, "models": 1, "policy": 1, "community": 1},
}


class Database:
    """The connection every store shares; `open` brings each feature's tables up to date."""

    def __init__(self, path: Path, schemas: Sequence[Schema] | None = None) -> None:
        self.path = path
        if schemas is None:
            # Imported here: the full schema names every feature, and features' stores import this module.
            from bot.schema import SCHEMAS

            schemas = SCHEMAS
        self.schemas = tuple(schemas)
        self._db: aiosqlite.Connection | None = None

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise StoreError("the database is not open")
        return self._db

    async def open(self) -> None:
        """Open the file, switch to WAL and bring every feature's tables up to date."""
        self._db = await aiosqlite.connect(self.path)
        self._db.row_factory = aiosqlite.Row
        await self._db.execute("PRAGMA journal_mode=WAL")
        await self._db.execute("PRAGMA synchronous=NORMAL")
        await self._migrate()

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    async def versions(self) -> dict[str, int]:
        """Each feature's schema version in this file."""
        rows = await self.db.execute_fetchall("SELECT feature, version FROM schema_versions")
        return {str(feature): int(version) for feature, version in rows}

    async def _migrate(self) -> None:
        (shared,) = await (await self.db.execute("PRAGMA user_version")).fetchone()  # type: ignore[misc]
        if shared != PER_FEATURE and shared not in LEGACY_VERSIONS:
            raise self._newer(f"schema version {shared}")
        if shared != PER_FEATURE:
            await self.db.executescript(
                "BEGIN; CREATE TABLE schema_versions (feature TEXT PRIMARY KEY, version INTEGER NOT NULL);"
                f" PRAGMA user_version = {PER_FEATURE}; COMMIT;"
            )
            await self.db.executemany(
                "INSERT INTO schema_versions (feature, version) VALUES (?, ?)", LEGACY_VERSIONS[shared].items()
            )
            await self.db.commit()
        versions = await self.versions()
        for schema in self.schemas:
            version = versions.get(schema.feature, 0)
            if version > len(schema.steps):
                known = len(schema.steps)
                raise self._newer(f"{schema.feature} tables at version {version} (this sdbot knows {known})")
            for target, script in enumerate(schema.steps[version:], start=version + 1):
                record = (
                    f"INSERT INTO schema_versions (feature, version) VALUES ('{schema.feature}', {target})"
                    " ON CONFLICT (feature) DO UPDATE SET version = excluded.version"
                )
                # The tables and their version in one transaction: a crash leaves the step done or not at all.
                await self.db.executescript(f"BEGIN; {script}; {record}; COMMIT;")

    def _newer(self, what: str) -> StoreError:
        return StoreError(
            f"SDBOT_DB {self.path} has {what}, newer than this sdbot knows: upgrade sdbot or point SDBOT_DB at"
            " another file"
        )
