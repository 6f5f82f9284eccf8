"""The embedded PostgreSQL of the default set-up (pgserver), kept in a git-ignored folder."""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class EmbeddedPostgres:
    """Start (or join) a pgserver instance in `data_dir` and stop it on request."""

    def __init__(self, data_dir: Path, *, delete_on_stop: bool = False) -> None:
        self.data_dir = Path(data_dir).resolve() / "pgdata"
        self._delete = delete_on_stop
        self._server: Any = None

    def start(self) -> str:
        """Start the server if it is not running and return its connection URI."""
        import pgserver  # imported here: only the default set-up needs it

        self.data_dir.mkdir(parents=True, exist_ok=True)
        # cleanup_mode=None: the server outlives this handle, so a crashed `dexec up`
        # can be started again against the same data; stop() stops it explicitly.
        self._server = pgserver.get_server(  # type: ignore[attr-defined]
            self.data_dir, cleanup_mode=None)
        uri: str = self._server.get_uri()
        log.info("embedded PostgreSQL at %s", self.data_dir)
        return uri

    def stop(self) -> None:
        """Stop the server (and delete its data when asked to at construction).

        pgserver only stops a server when the last process holding a handle lets go, and it
        counts a killed process as still holding one; so stop it with pg_ctl directly.
        """
        if self._server is None:
            return
        from pgserver._commands import pg_ctl  # type: ignore[attr-defined]

        server, self._server = self._server, None
        try:
            pg_ctl(["-w", "-m", "fast", "stop"], pgdata=server.pgdata, user=server.system_user)
        except subprocess.CalledProcessError:
            log.info("embedded PostgreSQL was not running")
        server.cleanup_mode = None
        server.cleanup()  # forget this process's handle
        if self._delete:
            shutil.rmtree(self.data_dir, ignore_errors=True)
