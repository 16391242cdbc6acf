"""A throwaway PostgreSQL server for the tests: initdb and pg_ctl in a temporary folder.

Debian's postgresql package (``scripts/setup-system.sh`` installs it) puts initdb and pg_ctl in
/usr/lib/postgresql/<version>/bin. The server listens on 127.0.0.1 on a free port, trusts local
connections and is stopped at the end of the session. PostgreSQL refuses to run as root, so
under root it runs as the ``postgres`` user the package creates.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

__all__ = ["find_binaries", "PostgresServer"]

USER = "course"


def find_binaries() -> Path | None:
    """The folder holding initdb and pg_ctl, or None."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(os.path.realpath(on_path)).parent
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """initdb + pg_ctl start in a temporary folder; ``url(name)`` makes a fresh database."""

    def __init__(self, bin_dir: Path):
        # its own folder under /tmp: the postgres user cannot enter pytest's (mode 0700, root's)
        self.folder, self.bin = Path(tempfile.mkdtemp(prefix="course-pg-")), Path(bin_dir)
        self.data, self.port = self.folder / "data", _free_port()
        self._as = []
        if os.geteuid() == 0:  # initdb: "cannot be run as root"
            shutil.chown(self.folder, "postgres")
            self._as = ["runuser", "-u", "postgres", "--"]
        self._run("initdb", "-D", str(self.data), "-U", USER, "--auth=trust", "-E", "UTF8",
                  "--no-sync")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.folder / "server.log"), "-w",
                  "-o", f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1",
                  "start")

    def _run(self, tool: str, *args: str) -> None:
        result = subprocess.run([*self._as, str(self.bin / tool), *args], capture_output=True,
                                text=True, timeout=120, check=False)
        if result.returncode != 0:
            log = self.folder / "server.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{tool} failed ({result.returncode}): {result.stderr}\n{tail}")

    def url(self, database: str) -> str:
        """A new, empty database on the server, as a SQLAlchemy URL."""
        from sqlalchemy import create_engine, text

        admin = create_engine(f"postgresql://{USER}@127.0.0.1:{self.port}/postgres",
                              isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{database}"'))
        admin.dispose()
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
