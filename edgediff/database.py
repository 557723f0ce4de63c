"""The Hypothesis example database edgediff runs with.

- default: the local directory ``.hypothesis/examples`` (Hypothesis' own default);
- ``EDGEDIFF_DB=redis://HOST:PORT/N``: a ``MultiplexedDatabase`` of the local directory and
  ``hypothesis.extra.redis.RedisExampleDatabase``, so every machine replays every failure any
  machine found;
- ``EDGEDIFF_DB_READONLY=1``: wrap it in ``ReadOnlyDatabase`` (replay, never write), for
  developers who should reproduce the shared failures without adding their own.

Built once per process: a new Redis client per test would make Hypothesis treat each as a
different database.
"""
from __future__ import annotations

import functools
import os

from hypothesis.database import DirectoryBasedExampleDatabase, MultiplexedDatabase, ReadOnlyDatabase


@functools.lru_cache(maxsize=None)
def from_environment(url: str | None = None, readonly: bool | None = None):
    url = os.environ.get("EDGEDIFF_DB", "") if url is None else url
    readonly = os.environ.get("EDGEDIFF_DB_READONLY", "") not in ("", "0") if readonly is None else readonly
    # Hypothesis' own default location, honouring HYPOTHESIS_STORAGE_DIRECTORY
    local = DirectoryBasedExampleDatabase(
        os.path.join(os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY", ".hypothesis"), "examples"))
    if not url:
        db = local
    elif url.startswith(("redis://", "rediss://", "unix://")):
        try:
            import redis
            from hypothesis.extra.redis import RedisExampleDatabase
        except ImportError as exc:
            raise ValueError(f"EDGEDIFF_DB={url!r} needs the redis package: {exc}") from None
        db = MultiplexedDatabase(local, RedisExampleDatabase(redis.Redis.from_url(url)))
    else:
        raise ValueError(f"EDGEDIFF_DB must be a redis:// URL, got {url!r}")
    return ReadOnlyDatabase(db) if readonly else db
