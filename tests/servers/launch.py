"""Start throwaway servers on loopback for the test suite, and stop them.

Each ``start_*`` function starts one server on 127.0.0.1 in a fresh temporary
directory, waits until it answers (``timeout`` seconds at most, 60 by
default), and returns a small object with the connection details and a
``stop()`` method (also usable as a context manager).  ``stop()`` terminates
the server's whole process group (SIGTERM, then SIGKILL after a grace period)
and removes the temporary directory; it is idempotent, and every server still
running when the interpreter exits is stopped by an ``atexit`` hook.  On Linux
the servers also get SIGKILL if the Python thread that started them dies
(PR_SET_PDEATHSIG), so a killed test run does not leave servers behind.

- :func:`start_azurite`: Azurite blob service (``node_modules/.bin/azurite-blob``).
- :func:`start_cosmos`: @vercel/cosmosdb-server through ``cosmos_launcher.js``
  (HTTPS with a self-signed, expired certificate: clients must not verify it).
- :func:`start_postgres`: a PostgreSQL cluster made by ``initdb``; as root the
  server programs run as the ``postgres`` OS user, since they refuse root.
- :func:`start_moto`: moto's standalone server (``moto[server]``, a Python
  package of the test extra), one HTTP endpoint speaking the real DynamoDB and S3
  protocols; clients sign with any key (``AWS_ACCESS_KEY_ID=testing``).

Node packages come from ``npm ci`` at the repo root and PostgreSQL from the
system; ``scripts/bootstrap`` installs both.  A missing program raises
:class:`ServerStartError` at once, with a hint.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import glob
import http.client
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

__all__ = [
    "AZURITE_ACCOUNT_KEY",
    "AZURITE_ACCOUNT_NAME",
    "COSMOS_EMULATOR_KEY",
    "AzuriteServer",
    "CosmosServer",
    "MotoServer",
    "PostgresServer",
    "ServerStartError",
    "start_azurite",
    "start_cosmos",
    "start_postgres",
    "start_moto",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
DEFAULT_TIMEOUT = 60.0
STOP_GRACE = 10.0
BOOTSTRAP_HINT = "run scripts/bootstrap from the repo root"

# Well-known Azurite / Azure Storage emulator development account.
AZURITE_ACCOUNT_NAME = "devstoreaccount1"
AZURITE_ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
# Well-known Cosmos DB emulator key (cosmosdb-server accepts any key).
COSMOS_EMULATOR_KEY = (
    "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw=="
)


class ServerStartError(RuntimeError):
    """A test server could not be started (missing program, crash, time-out)."""


# --------------------------------------------------------------------------
# process plumbing
# --------------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1
try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None
except (OSError, AttributeError):  # pragma: no cover - non-glibc platforms
    _prctl = None


def _die_with_parent() -> None:
    """preexec_fn: SIGKILL the child when the thread that forked it exits."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


_live: set[_Server] = set()
_live_lock = threading.Lock()


@atexit.register
def _stop_all() -> None:
    with _live_lock:
        servers = list(_live)
    for server in servers:
        with contextlib.suppress(Exception):
            server.stop()


def _kill_group(proc: subprocess.Popen, grace: float) -> None:
    """SIGTERM the process group led by ``proc``, SIGKILL after ``grace`` s."""
    pgid = proc.pid  # start_new_session=True: the child leads its own group
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    # Also reaps stragglers when the leader is already gone.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)


@dataclass(eq=False)
class _Server:
    """Bookkeeping common to all servers."""

    name: str
    proc: subprocess.Popen = field(repr=False)
    tmpdir: Path
    log_path: Path
    startup_seconds: float = 0.0
    _stopped: bool = field(default=False, repr=False)
    _stop_hook: Callable[[], None] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self, grace: float = STOP_GRACE) -> None:
        """Stop the server (whole process group) and delete its temp dir."""
        if self._stopped:
            return
        self._stopped = True
        try:
            if self._stop_hook is not None and self.proc.poll() is None:
                with contextlib.suppress(Exception):
                    self._stop_hook()
            _kill_group(self.proc, grace)
            stdin = self.proc.stdin
            if stdin is not None:
                with contextlib.suppress(OSError):
                    stdin.close()
        finally:
            with _live_lock:
                _live.discard(self)
            shutil.rmtree(self.tmpdir, ignore_errors=True)

    def log_tail(self, lines: int = 40) -> str:
        return _tail(self.log_path, lines)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _spawn(name: str, argv: list[str], tmpdir: Path, log_path: Path, **kwargs) -> subprocess.Popen:
    """Start ``argv`` in a new session (own process group), output to a log file.

    The output goes to a file, never to a pipe nobody reads (a full pipe would
    block the server) nor to the caller's stdout (a CI runner waiting for EOF
    on it would hang if a server outlived the tests).
    """
    with open(log_path, "ab") as log:
        try:
            proc = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=kwargs.pop("stdin", subprocess.DEVNULL),
                start_new_session=True,
                preexec_fn=_die_with_parent,
                close_fds=True,
                **kwargs,
            )
        except OSError as exc:
            raise ServerStartError(f"{name}: cannot run {argv[0]}: {exc}") from exc
    return proc


def _wait_until(
    server_name: str,
    proc: subprocess.Popen,
    log_path: Path,
    check: Callable[[], bool],
    timeout: float,
    interval: float = 0.1,
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise ServerStartError(
                f"{server_name} exited with status {proc.returncode} before it was ready; "
                f"log {log_path}:\n{_tail(log_path)}"
            )
        try:
            if check():
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise ServerStartError(
                f"{server_name} did not answer within {timeout:.0f} s; log {log_path}:\n{_tail(log_path)}"
            )
        time.sleep(interval)


def _require_node() -> str:
    node = shutil.which("node")
    if node is None:
        raise ServerStartError(f"'node' is not on PATH (Node.js >= 20 is needed; {BOOTSTRAP_HINT})")
    return node


def _make_tmpdir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))


# --------------------------------------------------------------------------
# Azurite (blob)
# --------------------------------------------------------------------------


@dataclass(eq=False)
class AzuriteServer(_Server):
    host: str = HOST
    port: int = 0
    account_name: str = AZURITE_ACCOUNT_NAME
    account_key: str = field(default=AZURITE_ACCOUNT_KEY, repr=False)

    @property
    def blob_endpoint(self) -> str:
        return f"http://{self.host}:{self.port}/{self.account_name}"

    url = blob_endpoint

    @property
    def connection_string(self) -> str:
        return (
            "DefaultEndpointsProtocol=http;"
            f"AccountName={self.account_name};"
            f"AccountKey={self.account_key};"
            f"BlobEndpoint={self.blob_endpoint};"
        )


def _http_answers(host: str, port: int, path: str) -> bool:
    conn = http.client.HTTPConnection(host, port, timeout=2)
    try:
        conn.request("GET", path)
        conn.getresponse().read()
        return True  # any HTTP status means it is up
    finally:
        conn.close()


def start_azurite(timeout: float = DEFAULT_TIMEOUT, *, attempts: int = 3) -> AzuriteServer:
    """Start the Azurite blob service on 127.0.0.1 with a fresh workspace."""
    _require_node()
    exe = REPO_ROOT / "node_modules" / ".bin" / "azurite-blob"
    if not exe.exists():
        raise ServerStartError(f"{exe} is missing (npm packages not installed; {BOOTSTRAP_HINT})")
    last: Exception | None = None
    for _ in range(attempts):
        tmpdir = _make_tmpdir("sekiops-azurite-")
        log_path = tmpdir / "azurite.log"
        workspace = tmpdir / "data"
        workspace.mkdir()
        port = _free_port()
        argv = [
            str(exe),
            "--blobHost", HOST,
            "--blobPort", str(port),
            "--location", str(workspace),
            "--disableTelemetry",
            "--skipApiVersionCheck",
            "--silent",
        ]
        t0 = time.monotonic()
        proc = _spawn("azurite", argv, tmpdir, log_path, cwd=str(tmpdir))
        server = AzuriteServer("azurite", proc, tmpdir, log_path, port=port)
        with _live_lock:
            _live.add(server)
        try:
            _wait_until(
                "azurite", proc, log_path,
                partial(_http_answers, HOST, port, f"/{AZURITE_ACCOUNT_NAME}?comp=list"),
                timeout,
            )
        except ServerStartError as exc:
            last = exc
            log = _tail(log_path)
            server.stop()
            if "EADDRINUSE" in log:  # lost the race for the free port: retry
                continue
            raise
        server.startup_seconds = time.monotonic() - t0
        return server
    raise ServerStartError(f"azurite: no free port after {attempts} attempts: {last}")


# --------------------------------------------------------------------------
# Cosmos DB (cosmosdb-server)
# --------------------------------------------------------------------------


@dataclass(eq=False)
class CosmosServer(_Server):
    host: str = HOST
    port: int = 0
    key: str = field(default=COSMOS_EMULATOR_KEY, repr=False)

    @property
    def endpoint(self) -> str:
        return f"https://{self.host}:{self.port}"

    url = endpoint

    @property
    def connection_string(self) -> str:
        return f"AccountEndpoint={self.endpoint}/;AccountKey={self.key};"


_COSMOS_READY = re.compile(rb"cosmosdb-server ready https://127\.0\.0\.1:(\d+)")


def start_cosmos(timeout: float = DEFAULT_TIMEOUT) -> CosmosServer:
    """Start cosmosdb-server (patched, keep-alive) on 127.0.0.1, HTTPS."""
    node = _require_node()
    launcher = Path(__file__).resolve().with_name("cosmos_launcher.js")
    pkg = REPO_ROOT / "node_modules" / "@vercel" / "cosmosdb-server" / "package.json"
    if not pkg.exists():
        raise ServerStartError(f"{pkg.parent} is missing (npm packages not installed; {BOOTSTRAP_HINT})")
    tmpdir = _make_tmpdir("sekiops-cosmos-")
    log_path = tmpdir / "cosmos.log"
    env = dict(os.environ, COSMOS_EXIT_ON_STDIN_EOF="1")
    t0 = time.monotonic()
    # Port 0: the server binds a free port itself and prints it (no race).
    # stdin is a pipe we keep open: the launcher exits when it reaches EOF.
    proc = _spawn(
        "cosmosdb-server", [node, str(launcher), "0"], tmpdir, log_path,
        cwd=str(REPO_ROOT), env=env, stdin=subprocess.PIPE,
    )
    server = CosmosServer("cosmosdb-server", proc, tmpdir, log_path)
    with _live_lock:
        _live.add(server)

    def ready() -> bool:
        m = _COSMOS_READY.search(log_path.read_bytes())
        if not m:
            return False
        server.port = int(m.group(1))
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        conn = http.client.HTTPSConnection(HOST, server.port, timeout=2, context=ctx)
        try:
            conn.request("GET", "/")
            return conn.getresponse().status == 200
        finally:
            conn.close()

    try:
        _wait_until("cosmosdb-server", proc, log_path, ready, timeout)
    except BaseException:
        server.stop()
        raise
    server.startup_seconds = time.monotonic() - t0
    return server


# --------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------


@dataclass(eq=False)
class PostgresServer(_Server):
    host: str = HOST
    port: int = 0
    user: str = "sekiops"
    password: str = field(default="", repr=False)
    dbname: str = "sekiops"
    datadir: Path | None = None
    socket_dir: Path | None = None
    bindir: Path | None = None

    @property
    def url(self) -> str:
        """libpq URL, e.g. for ``psycopg.connect(url)``."""
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{self.dbname}"

    @property
    def dsn(self) -> str:
        return (
            f"host={self.host} port={self.port} user={self.user} "
            f"password={self.password} dbname={self.dbname}"
        )


def _find_pg_bindir() -> Path:
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
            if out:
                candidates.append(Path(out))

    def version_key(p: str) -> tuple:
        return tuple(int(x) if x.isdigit() else 0 for x in re.split(r"[./]", p) if x)

    candidates += [
        Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version_key, reverse=True)
    ]
    for prog in ("initdb", "postgres"):
        found = shutil.which(prog)
        if found:
            candidates.append(Path(found).resolve().parent)
    for cand in candidates:
        if all((cand / prog).is_file() for prog in ("initdb", "postgres", "pg_ctl")):
            return cand
    raise ServerStartError(
        "PostgreSQL server programs (initdb, postgres, pg_ctl) not found via pg_config --bindir, "
        f"/usr/lib/postgresql/*/bin or PATH (Debian package 'postgresql'; {BOOTSTRAP_HINT})"
    )


def _pg_env(tmpdir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(LANG="C.UTF-8", LC_ALL="C.UTF-8", HOME=str(tmpdir), TZ="UTC")
    return env


def _pg_tmp_base() -> str | None:
    """A base dir the postgres user can traverse (TMPDIR may be private)."""
    base = Path(tempfile.gettempdir()).resolve()
    for p in [base, *base.parents]:
        if not os.stat(p).st_mode & stat.S_IXOTH:
            return "/tmp"
    return str(base)


def start_postgres(timeout: float = DEFAULT_TIMEOUT, *, attempts: int = 3) -> PostgresServer:
    """initdb a throwaway cluster, start it on 127.0.0.1, create db ``sekiops``.

    Password (scram-sha-256) auth over TCP for user ``sekiops``, trust over the
    unix socket (which lives in the temp dir).  Durability is switched off
    (fsync, synchronous_commit, full_page_writes): the cluster is thrown away.
    """
    bindir = _find_pg_bindir()
    as_root = os.geteuid() == 0
    run_as: dict = {}
    if as_root:
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            raise ServerStartError(
                "running as root, but there is no 'postgres' OS user to run the PostgreSQL "
                f"server as (it comes with the Debian 'postgresql' package; {BOOTSTRAP_HINT})"
            ) from None
        run_as = dict(user=pw.pw_uid, group=pw.pw_gid, extra_groups=[])

    last: Exception | None = None
    for _ in range(attempts):
        t0 = time.monotonic()
        tmpdir = Path(tempfile.mkdtemp(prefix="sekiops-pg-", dir=_pg_tmp_base() if as_root else None))
        if as_root:
            os.chown(tmpdir, run_as["user"], run_as["group"])
        datadir = tmpdir / "data"
        log_path = tmpdir / "postgres.log"
        env = _pg_env(tmpdir)
        password = secrets.token_hex(12)
        user = "sekiops"
        pwfile = tmpdir / "pwfile"
        pwfile.write_text(password + "\n")
        log_path.touch()
        if as_root:
            for p in (pwfile, log_path):
                os.chown(p, run_as["user"], run_as["group"])

        def pg(args: list[str], check_timeout: float, what: str, tmpdir=tmpdir, env=env) -> None:
            try:
                res = subprocess.run(
                    args, cwd=str(tmpdir), env=env, capture_output=True, text=True,
                    timeout=check_timeout, stdin=subprocess.DEVNULL, **run_as,
                )
            except subprocess.TimeoutExpired as exc:
                raise ServerStartError(f"postgres: {what} timed out after {check_timeout:.0f} s") from exc
            if res.returncode != 0:
                raise ServerStartError(
                    f"postgres: {what} failed ({res.returncode}): {res.stdout[-2000:]}{res.stderr[-2000:]}"
                )

        try:
            pg(
                [
                    str(bindir / "initdb"), "-D", str(datadir), "-U", user, f"--pwfile={pwfile}",
                    "--auth-host=scram-sha-256", "--auth-local=trust",
                    "-E", "UTF8", "--no-locale", "--no-sync",
                ],
                timeout, "initdb",
            )
        except BaseException:
            shutil.rmtree(tmpdir, ignore_errors=True)
            raise

        port = _free_port()
        argv = [
            str(bindir / "postgres"), "-D", str(datadir),
            "-c", f"listen_addresses={HOST}",
            "-c", f"port={port}",
            "-c", f"unix_socket_directories={tmpdir}",
            "-c", "fsync=off",
            "-c", "synchronous_commit=off",
            "-c", "full_page_writes=off",
            "-c", "logging_collector=off",
        ]
        proc = _spawn("postgres", argv, tmpdir, log_path, cwd=str(tmpdir), env=env, **run_as)

        def pg_ctl_stop(datadir=datadir, tmpdir=tmpdir, env=env) -> None:
            subprocess.run(
                [str(bindir / "pg_ctl"), "stop", "-D", str(datadir), "-m", "immediate", "-w", "-t", "20"],
                cwd=str(tmpdir), env=env, capture_output=True, timeout=30,
                stdin=subprocess.DEVNULL, **run_as,
            )

        server = PostgresServer(
            "postgres", proc, tmpdir, log_path, _stop_hook=pg_ctl_stop,
            port=port, user=user, password=password, datadir=datadir, socket_dir=tmpdir, bindir=bindir,
        )
        with _live_lock:
            _live.add(server)
        pg_isready = bindir / "pg_isready"

        def ready(pg_isready=pg_isready, port=port, env=env, log_path=log_path) -> bool:
            if pg_isready.is_file():
                return subprocess.run(
                    [str(pg_isready), "-q", "-h", HOST, "-p", str(port), "-t", "2"],
                    env=env, timeout=10, stdin=subprocess.DEVNULL,
                ).returncode == 0
            with socket.create_connection((HOST, port), timeout=2):
                return b"ready to accept connections" in log_path.read_bytes()

        try:
            _wait_until("postgres", proc, log_path, ready, timeout)
        except ServerStartError as exc:
            last = exc
            log = server.log_tail()
            server.stop()
            if "could not bind" in log or "already in use" in log:
                continue  # lost the race for the free port: retry
            raise
        except BaseException:
            server.stop()
            raise
        try:
            env_pw = dict(env, PGPASSWORD=password)
            res = subprocess.run(
                [str(bindir / "createdb") if (bindir / "createdb").is_file() else "createdb",
                 "-h", HOST, "-p", str(port), "-U", user, "sekiops"],
                env=env_pw, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
            )
            if res.returncode != 0:
                raise ServerStartError(f"postgres: createdb sekiops failed: {res.stderr.strip()}")
        except BaseException:
            server.stop()
            raise
        server.startup_seconds = time.monotonic() - t0
        return server
    raise ServerStartError(f"postgres: no free port after {attempts} attempts: {last}")


# --------------------------------------------------------------------------
# moto (DynamoDB + S3)
# --------------------------------------------------------------------------

#: what clients of the moto server sign with (moto accepts any credentials)
MOTO_ACCESS_KEY = "testing"
MOTO_SECRET_KEY = "testing"
MOTO_REGION = "us-east-1"


@dataclass(eq=False)
class MotoServer(_Server):
    host: str = HOST
    port: int = 0

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    url = endpoint

    @property
    def env(self) -> dict[str, str]:
        """The AWS environment a client of this server needs (region and throwaway credentials)."""
        return {"AWS_ACCESS_KEY_ID": MOTO_ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": MOTO_SECRET_KEY,
                "AWS_DEFAULT_REGION": MOTO_REGION, "AWS_REGION": MOTO_REGION}

    def client(self, service: str):
        """A plain boto3 client of the server (test setup: buckets, hand-built items)."""
        import boto3

        return boto3.client(service, endpoint_url=self.endpoint, region_name=MOTO_REGION,
                            aws_access_key_id=MOTO_ACCESS_KEY, aws_secret_access_key=MOTO_SECRET_KEY)


def start_moto(timeout: float = DEFAULT_TIMEOUT, *, attempts: int = 3) -> MotoServer:
    """Start moto's standalone server (``python -m moto.server``) on a free loopback port."""
    try:
        import flask  # noqa: F401  (moto[server]'s extra)
        import moto  # noqa: F401
    except ImportError as exc:
        raise ServerStartError(f"moto[server] is not installed ({exc}; {BOOTSTRAP_HINT})") from None
    last: Exception | None = None
    for _ in range(attempts):
        tmpdir = _make_tmpdir("sekiops-moto-")
        log_path = tmpdir / "moto.log"
        port = _free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MOTO_", "SEKIOPS_"))}
        env.update(TMPDIR=str(tmpdir), AWS_ACCESS_KEY_ID=MOTO_ACCESS_KEY, AWS_SECRET_ACCESS_KEY=MOTO_SECRET_KEY,
                   AWS_DEFAULT_REGION=MOTO_REGION)
        argv = [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(port)]
        t0 = time.monotonic()
        proc = _spawn("moto", argv, tmpdir, log_path, cwd=str(tmpdir), env=env)
        server = MotoServer("moto", proc, tmpdir, log_path, port=port)
        with _live_lock:
            _live.add(server)
        try:
            _wait_until("moto", proc, log_path, partial(_http_answers, HOST, port, "/moto-api/data.json"), timeout)
        except ServerStartError as exc:
            last = exc
            log = _tail(log_path)
            server.stop()
            if "in use" in log:  # lost the race for the free port: retry
                continue
            raise
        server.startup_seconds = time.monotonic() - t0
        return server
    raise ServerStartError(f"moto: no free port after {attempts} attempts: {last}")
