"""The persistent response cache: an answer the API gave once is never paid for again.

SQLite in the user cache directory (``cache_root()/api-responses.sqlite3``), one row per request, keyed by
a SHA-256 of the provider, base_url, model and the exact request body (never the key: two keys for one
account get the same answer). A row is committed as soon as its response arrives, so a run killed a
moment later finds it when resumed. Safe across threads of one process and across processes (SQLite's
own locking, WAL journal; see __init__ for durability).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from pathlib import Path


def request_key(provider: str, base_url: str, model: str, body: dict) -> str:
    text = json.dumps({"provider": provider, "base_url": base_url, "model": model, "body": body},
                      sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def default_path() -> Path:
    from workbench.models.spec import cache_root

    return cache_root() / "api-responses.sqlite3"


class ResponseCache:
    def __init__(self, path: Path | None = None):
        self.path = Path(path) if path else default_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), timeout=30, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # WAL + synchronous=NORMAL: a commit is in the WAL file before put() returns — it survives the process being
        # killed (what resuming relies on) — without an fsync per answer (~5 ms each; a power cut may lose the last ones).
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, response TEXT NOT NULL, "
                         "created_at TEXT DEFAULT CURRENT_TIMESTAMP)")

    def get(self, key: str) -> dict | None:
        with self._lock:
            row = self._db.execute("SELECT response FROM responses WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, response: dict) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO responses (key, response) VALUES (?, ?)",
                             (key, json.dumps(response, ensure_ascii=False)))

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
