"""Security review, enforced (see docs/security.md for the threat model and the controls).

Sections:

1. private temp files: 0600 files in a 0700 directory, unpredictable names, refuses a symlinked
   or foreign-owned spool directory, never follows symlinks when cleaning, never touches a live
   process's files; restore cleans up after itself and never clobbers special files;
2. local blob keys confined to the root (``..``, absolute, backslash, symlinked files and
   directories, for reads, writes, stats and deletes);
3. no secret in any output, log, repr or exception: the CLI run with passwords, account keys,
   SAS tokens and connection strings in URLs and environment variables, against unreachable
   stores and with bad credentials, with ``-v``; repr() and tracebacks of every store;
4. mutating commands need ``--execute`` (every command ``sekiops --help`` lists is classified;
   read-only commands are checked to change nothing and create nothing);
5. static scans of ``sekiops/``: no eval/exec/pickle/marshal/shell=True/os.system; SQL built
   with parameters (SQLite ``?``, Cosmos ``@name``) and psycopg.sql for identifiers, never by
   formatting values into the text; plus a runtime injection attempt through names.
"""

from __future__ import annotations

import ast
import base64
import fcntl
import hashlib
import io
import json
import logging
import os
import re
import stat
import subprocess
import sys
import traceback
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

import pytest

from sekiops.blob import open_blob_store
from sekiops.errors import SekiopsError, SpoolError, UnsafeKeyError
from sekiops.pipeline.persist import PersistOptions, persist_stream
from sekiops.pipeline.restore import restore
from sekiops.pipeline.spool import Spool
from sekiops.state import open_state_store
from sekiops.urls import redact

pytestmark = pytest.mark.usefixtures("private_spool")  # every test spools in its own directory


REPO = Path(__file__).resolve().parents[1]
SOURCES = REPO / "sekiops"
SLUI = "063904064000000000000000000001"


def _cli(args, env=None, timeout=120, **kw) -> subprocess.CompletedProcess:
    full_env = dict(env if env is not None else os.environ)
    full_env["PYTHONPATH"] = str(REPO) + os.pathsep + full_env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "sekiops", *args], env=full_env, capture_output=True,
                          timeout=timeout, cwd=str(REPO), **kw)


def _small_store(tmp_path: Path, offload: bool = True):
    state_url = f"sqlite:///{tmp_path}/state.db"
    state = open_state_store(state_url)
    blob = open_blob_store(str(tmp_path / "blobs"))
    body = json.dumps({"items": [uuid.UUID(int=i).hex for i in range(3000)]}).encode()
    persist_stream(state, blob, io.BytesIO(body), projector_name="Sec", projector_version="1", events_processed=3,
                   last_sortable_unique_id=SLUI,
                   options=PersistOptions(payload_threshold=100 if offload else 10**12))
    state.close()
    return state_url, tmp_path / "blobs", body


# --- 1. private temp files ----------------------------------------------------------------------


def test_spool_files_are_private_and_unpredictable(tmp_path):
    spool = Spool(str(tmp_path / "sp"))
    assert stat.S_IMODE(os.lstat(spool.directory).st_mode) == 0o700
    files = [spool.create("Proj") for _ in range(5)]
    try:
        names = set()
        for f in files:
            st = os.lstat(f.path)
            assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
            assert st.st_uid == os.getuid()
            m = re.fullmatch(r"snapshot-Proj-([0-9a-f]{32})\.tmp", os.path.basename(f.path))
            assert m, f.path  # 128 random bits from secrets: not guessable, not sequential
            names.add(m.group(1))
        assert len(names) == 5
    finally:
        for f in files:
            f.close()
    assert os.listdir(spool.directory) == []


def test_spool_names_are_sanitised(tmp_path):
    spool = Spool(str(tmp_path / "sp"))
    f = spool.create("../../etc/passwd\x00;rm -rf /")
    try:
        assert os.path.dirname(f.path) == spool.directory
        assert re.fullmatch(r"snapshot-[A-Za-z0-9_.-]+-[0-9a-f]{32}\.tmp", os.path.basename(f.path))
    finally:
        f.close()


def test_spool_dir_permissions_are_tightened(tmp_path):
    d = tmp_path / "sp"
    d.mkdir(mode=0o777)
    d.chmod(0o777)
    Spool(str(d))
    assert stat.S_IMODE(d.stat().st_mode) == 0o700


def test_spool_refuses_symlinked_dir(tmp_path):
    target = tmp_path / "elsewhere"
    target.mkdir()
    (tmp_path / "sp").symlink_to(target, target_is_directory=True)
    with pytest.raises(SpoolError, match="symlink"):
        Spool(str(tmp_path / "sp"))
    assert list(target.iterdir()) == []


def test_spool_refuses_foreign_owned_dir(tmp_path):
    if os.geteuid() == 0:
        d = tmp_path / "sp"
        d.mkdir(mode=0o700)
        os.chown(d, 65534, 65534)  # nobody
        path = str(d)
    else:
        path = "/"  # owned by root, not by us
    with pytest.raises(SpoolError, match="belongs to uid"):
        Spool(path)


def test_spool_refuses_a_file_in_place_of_the_dir(tmp_path):
    (tmp_path / "sp").write_text("not a directory")
    with pytest.raises(SpoolError):
        Spool(str(tmp_path / "sp"))


def test_orphan_cleaning_never_follows_symlinks(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    d = tmp_path / "sp"
    Spool(str(d))
    (d / "snapshot-evil-0123.tmp").symlink_to(victim)
    Spool(str(d))  # cleans orphans at creation
    assert victim.read_text() == "precious"


def test_orphan_cleaning_skips_locked_files(tmp_path):
    """A file someone holds (flock) is in use: never removed, even by another Spool."""
    d = str(tmp_path / "sp")
    live = Spool(d).create("Live")
    orphan = os.path.join(d, "snapshot-dead-" + "0" * 32 + ".tmp")
    with open(orphan, "wb") as f:
        f.write(b"left by a crash")
    try:
        removed = Spool(d).orphans_removed
        assert removed == 1 and not os.path.exists(orphan)
        assert os.path.exists(live.path)
        fd = os.open(live.path, os.O_RDONLY)
        try:
            with pytest.raises(OSError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
    finally:
        live.close()


@pytest.mark.parametrize("offload", [False, True], ids=["inline-payload", "payload-blob"])
@pytest.mark.parametrize("to", ["stream", "path"])
def test_restore_deletes_its_temp_files(tmp_path, offload, to):
    """BUG (inline payloads): restore leaves its ``snapshot-{name}-payload-*.tmp`` file (the
    decoded payload!) in the spool: the HashingReader closes the spool file, so SpoolFile.close()
    returns early without unlinking. A long-lived Spool then refuses work after 10 restores."""
    state_url, blobs, body = _small_store(tmp_path, offload=offload)
    state, blob = open_state_store(state_url), open_blob_store(str(blobs))
    spool = Spool(str(tmp_path / "sp"))
    for i in range(12):
        out = io.BytesIO() if to == "stream" else str(tmp_path / f"out{i}.json")
        restore(state, blob, out, projector_name="Sec", spool=spool)
        assert os.listdir(spool.directory) == [], f"restore {i + 1} left {os.listdir(spool.directory)}"


def test_restore_output_replaces_a_symlink_not_its_target(tmp_path):
    state_url, blobs, body = _small_store(tmp_path)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    link = tmp_path / "out.json"
    link.symlink_to(victim)
    restore(open_state_store(state_url), open_blob_store(str(blobs)), str(link), projector_name="Sec")
    assert victim.read_text() == "precious"
    assert not link.is_symlink() and link.read_bytes() == body


def test_restore_output_to_a_character_device_keeps_the_device(tmp_path):
    """BUG: ``sekiops restore --out /dev/null`` as root REPLACES /dev/null with a regular file
    holding the snapshot (partial file + rename). Everything else on the host that writes to
    /dev/null as another user then fails (seen here: initdb). Checked on a private clone of
    /dev/null (mknod, as root) or a FIFO (otherwise); never on the real one."""
    state_url, blobs, body = _small_store(tmp_path)
    dev = tmp_path / "null"
    if os.geteuid() == 0:
        os.mknod(dev, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        check = stat.S_ISCHR
    else:
        os.mkfifo(dev)
        check = stat.S_ISFIFO
        import threading
        threading.Thread(target=lambda: open(dev, "rb").read(), daemon=True).start()
    try:
        restore(open_state_store(state_url), open_blob_store(str(blobs)), str(dev), projector_name="Sec")
    except SekiopsError:
        pass  # refusing a special file is acceptable too
    assert check(os.lstat(dev).st_mode), "restore replaced the special file with a regular file"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".null.")], "partial file left"


def test_restore_output_file_mode_follows_umask(tmp_path):
    state_url, blobs, _ = _small_store(tmp_path)
    old = os.umask(0o077)
    try:
        restore(open_state_store(state_url), open_blob_store(str(blobs)), str(tmp_path / "o.json"),
                projector_name="Sec")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "o.json").stat().st_mode) == 0o600


# --- 2. local blob keys confined to the root -----------------------------------------------------

ESCAPING_KEYS = ["..", "../x.bin", "a/../../x.bin", "a\\..\\x.bin", "./a.bin", "a/./b.bin", "a/\x00.bin",
                 "a/\n.bin", "", ".sekiops-incoming/a.bin", ".sekiops-quarantine/a.bin", "a/", "/",
                 "a/" + "b" * 2000 + ".bin"]
#: keys that look like paths outside the root but are valid Sekiban 10.23 keys (literal prefixes):
#: the local store keeps each inside its root, under exactly that name
CONFINED_KEYS = ["/etc/passwd", "/tmp/x.bin", "C:/x.bin", "a//b.bin", "\\etc\\passwd", "///x.bin", " /x.bin",
                 "/" + "p" * 300 + "/x.bin"]


@pytest.mark.parametrize("key", ESCAPING_KEYS, ids=[repr(k)[:30] for k in ESCAPING_KEYS])
def test_local_store_refuses_escaping_keys(tmp_path, key):
    root = tmp_path / "root"
    store = open_blob_store(str(root))
    for op in (store.open_read, store.stat, store.exists, store.delete,
               lambda k: store.write_key(io.BytesIO(b"x"), k)):
        with pytest.raises(UnsafeKeyError):
            op(key)
    try:  # the key as the name of a write: refused, or normalised as Sekiban does, inside the root
        store.write(io.BytesIO(b"x"), key)
    except UnsafeKeyError:
        pass
    outside = [p for p in tmp_path.rglob("*") if not str(p).startswith(str(root))]
    assert outside == []


@pytest.mark.parametrize("key", CONFINED_KEYS, ids=[repr(k)[:30] for k in CONFINED_KEYS])
def test_local_store_confines_prefixed_keys(tmp_path, key):
    root = tmp_path / "root"
    store = open_blob_store(str(root))
    store.write_key(io.BytesIO(b"confined"), key)
    with store.open_read(key) as f:
        assert f.read() == b"confined"
    assert [b.key for b in store.list()] == [key]
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert files and all(str(p).startswith(str(root) + os.sep) for p in files)
    assert store.delete(key) and not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_local_store_never_follows_symlinks(tmp_path):
    root = tmp_path / "root"
    store = open_blob_store(str(root))
    outside = tmp_path / "outside"
    (outside / "dir").mkdir(parents=True)
    secret = outside / "secret.bin"
    secret.write_bytes(b"secret")
    (root / "P").mkdir(parents=True)
    (root / "P" / "file.bin").symlink_to(secret)
    (root / "Q").symlink_to(outside / "dir", target_is_directory=True)
    (outside / "dir" / "x.bin").write_bytes(b"outside")
    for key in ("P/file.bin", "Q/x.bin"):
        with pytest.raises(UnsafeKeyError):
            store.open_read(key)
        with pytest.raises(UnsafeKeyError):
            store.stat(key)
        with pytest.raises(UnsafeKeyError):
            store.delete(key)
    with pytest.raises(UnsafeKeyError):
        store.write(io.BytesIO(b"data"), "Q")  # the name directory is a symlink out of the root
    assert secret.read_bytes() == b"secret"
    assert sorted(p.name for p in (outside / "dir").iterdir()) == ["x.bin"]
    assert [i.key for i in store.list()] == []  # listing follows no symlink either


def test_local_store_root_given_through_a_symlink(tmp_path):
    """A root named through a symlink is resolved once (realpath); keys stay inside the real root."""
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "alias").symlink_to(real, target_is_directory=True)
    store = open_blob_store(str(tmp_path / "alias"))
    w = store.write(io.BytesIO(b"hello"), "P")
    assert (real / w.key).read_bytes() == b"hello"
    assert store.location == f"file://{real}"


def test_blob_url_must_be_local(tmp_path):
    with pytest.raises(UnsafeKeyError):
        open_blob_store("file://evil.example.com/share/blobs")


# --- 3. secrets never shown ------------------------------------------------------------------------

PG_PW = "PgPw-Zq8!x7Secret"
COSMOS_SECRET_KEY = base64.b64encode(b"cosmos-secret-key-" + b"\x01" * 46).decode()
ACCOUNT_KEY = base64.b64encode(b"azure-account-key-" + b"\x02" * 46).decode()
SAS_SIG = "SasSig0123456789abcdefSECRET%3D"


def _variants(secret: str) -> set[str]:
    """The secret and the forms it could leak in (URL-encoded, decoded, a long prefix)."""
    out = {secret, quote(secret, safe=""), quote(secret, safe="/+=")}
    if "%" in secret:
        from urllib.parse import unquote
        out.add(unquote(secret))
    out |= {s[:16] for s in list(out) if len(s) > 16}
    return out


def _assert_no_secret(text: str, secrets: list[str], what: str) -> None:
    for secret in secrets:
        for v in _variants(secret):
            assert v not in text, f"secret {secret[:4]}... leaked ({v!r}) in {what}:\n{text[-2000:]}"


def _populate(state_url: str, blob_url: str, sid: str, env: dict) -> None:
    """A row of projector "Sec" whose payload is in the scenario's blob store (good credentials)."""
    mp = pytest.MonkeyPatch()
    try:
        for k, v in env.items():
            mp.setenv(k, v)
        state = open_state_store(state_url, service_id=sid)
        blob = open_blob_store(blob_url)
        persist_stream(state, blob, io.BytesIO(json.dumps({"pre": list(range(3000))}).encode()),
                       projector_name="Sec", projector_version="1", events_processed=1,
                       last_sortable_unique_id=SLUI, options=PersistOptions(payload_threshold=100))
        state.close()
        blob.close()
    finally:
        mp.undo()


@pytest.fixture
def secret_scenarios(request, tmp_path):
    """(name, env additions, store args, service id, secrets) for each way a secret reaches the
    CLI. Rows exist (written with good credentials), so every command gets as far as the
    credentials: the connection, the sign-in, or the blob read."""
    pg = request.getfixturevalue("postgres_server")
    azurite = request.getfixturevalue("azurite")
    cosmos = request.getfixturevalue("cosmos_server")
    pg_host = pg.url.rsplit("@", 1)[1]
    cosmos_host = cosmos.endpoint.split("://", 1)[1].rstrip("/")
    cosmos_url = f"cosmos+https://{cosmos_host}/secdb/multiProjectionStates?verify=false"
    container = "sec" + uuid.uuid4().hex[:12]
    sqlite_url = f"sqlite:///{tmp_path}/s.db"
    local = str(tmp_path / "blobs")
    sid_pg, sid_cosmos, sid_az = ("sec-" + uuid.uuid4().hex[:8] for _ in range(3))
    _populate(pg.url, local, sid_pg, {})
    _populate(cosmos_url, local, sid_cosmos, {"COSMOS_KEY": cosmos.key})
    _populate(sqlite_url, f"azblob://{container}", sid_az,
              {"AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string})
    bad_conn = (f"DefaultEndpointsProtocol=http;AccountName={azurite.account_name};AccountKey={ACCOUNT_KEY};"
                f"BlobEndpoint={azurite.blob_endpoint};")
    sas_conn = (f"BlobEndpoint={azurite.blob_endpoint};"
                f"SharedAccessSignature=sv=2022-11-02&ss=b&srt=sco&sp=rwdlac&se=2099-01-01T00:00:00Z&sig={SAS_SIG}")
    dead_conn = (f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={ACCOUNT_KEY};"
                 "BlobEndpoint=http://127.0.0.1:1/devstoreaccount1;")
    az = ["--state", sqlite_url, "--blob", f"azblob://{container}?retries=0"]
    return [
        ("pg-unreachable", {}, ["--state", f"postgresql://admin:{quote(PG_PW)}@127.0.0.1:1/db", "--blob", local],
         sid_pg, [PG_PW]),
        ("pg-bad-password", {}, ["--state", f"postgresql://{pg.user}:{quote(PG_PW)}@{pg_host}", "--blob", local],
         sid_pg, [PG_PW]),
        ("pg-url-in-env", {"SEKIOPS_STATE_URL": f"postgresql://{pg.user}:{quote(PG_PW)}@{pg_host}",
                           "PGPASSWORD": PG_PW + "2"}, ["--blob", local], sid_pg, [PG_PW, PG_PW + "2"]),
        ("pg-good-password", {}, ["--state", pg.url, "--blob", local], sid_pg,
         [pg.password] if len(pg.password) >= 6 else []),
        ("cosmos-unreachable", {"COSMOS_KEY": COSMOS_SECRET_KEY},
         ["--state", "cosmos+https://127.0.0.1:1/db/c?verify=false", "--blob", local], sid_cosmos, [COSMOS_SECRET_KEY]),
        # (cosmosdb-server does not check keys: this one reads and writes; its output is still scanned)
        ("cosmos-other-key", {"COSMOS_KEY": COSMOS_SECRET_KEY}, ["--state", cosmos_url, "--blob", local], sid_cosmos,
         [COSMOS_SECRET_KEY]),
        ("cosmos-good-key", {"COSMOS_KEY": cosmos.key}, ["--state", cosmos_url, "--blob", local], sid_cosmos,
         [cosmos.key]),
        ("azure-unreachable", {"AZURE_STORAGE_CONNECTION_STRING": dead_conn}, az, sid_az, [ACCOUNT_KEY]),
        ("azure-bad-key", {"AZURE_STORAGE_CONNECTION_STRING": bad_conn}, az, sid_az, [ACCOUNT_KEY]),
        ("azure-sas", {"AZURE_STORAGE_CONNECTION_STRING": sas_conn}, az, sid_az, [SAS_SIG]),
        ("azure-good-key", {"AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string}, az, sid_az,
         [azurite.account_key]),
    ]


def _secret_commands(name: str, store_args: list[str], service_id: str, tmp_path: Path,
                     state_file: Path) -> list[list[str]]:
    sid = ["--service-id", service_id]
    return [
        ["-v", "persist", *store_args, *sid, "--projector", f"SecW{uuid.uuid4().hex[:6]}", "--version", "1",
         "--events-processed", "1", "--last-sortable-unique-id", SLUI, "--in", str(state_file),
         "--payload-threshold", "100"],
        ["-v", "restore", *store_args, *sid, "--projector", "Sec", "--out", str(tmp_path / f"{name}.out")],
        ["-v", "inventory", *store_args, *sid, "--format", "json"],
        ["-v", "audit-blobs", *store_args, *sid, "--format", "json"],
        ["-v", "anatomy", *store_args, *sid, "--projector", "Sec"],
    ]


def _scenario_env(extra_env: dict, tmp_path: Path) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("COSMOS_KEY", "AZURE_STORAGE_CONNECTION_STRING", "SEKIOPS_STATE_URL", "SEKIOPS_BLOB_URL",
                        "PGPASSWORD")}
    env.update(extra_env)
    env["SEKIOPS_SPOOL_DIR"] = str(tmp_path / "spool")
    return env


@pytest.fixture
def secret_state_file(tmp_path):
    f = tmp_path / "state.json"
    f.write_bytes(json.dumps({"a": list(range(5000))}).encode())
    return f


def test_cli_never_shows_secrets(secret_scenarios, tmp_path, secret_state_file):
    """Each scenario through a real ``sekiops -v`` process (persist, then restore): no secret in
    stdout or stderr, no traceback, exit 0 or 2. (The full command matrix runs in-process below:
    a process costs seconds of imports.)"""
    runs = []
    for name, extra_env, store_args, sid, secrets in secret_scenarios:
        env = _scenario_env(extra_env, tmp_path)
        commands = _secret_commands(name, store_args, sid, tmp_path, secret_state_file)
        # restore everywhere; persist too where the stores answer (the write path's messages)
        for cmd in commands[:2] if name.endswith(("good-password", "good-key")) else commands[1:2]:
            runs.append((name, cmd, env, secrets))
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda r: (r, _cli(r[1], env=r[2], timeout=120)), runs))
    failures = []
    for (name, cmd, _env, secrets), res in results:
        out = res.stdout.decode(errors="replace") + res.stderr.decode(errors="replace")
        what = f"{name}: sekiops {cmd[1]} (exit {res.returncode})"
        try:
            assert res.returncode in (0, 2), f"{what}: {out[-1500:]}"
            assert "Traceback" not in out, f"{what}: traceback"
            _assert_no_secret(out, secrets, what)
        except AssertionError as exc:
            failures.append(str(exc))
    assert not failures, "\n\n".join(failures)


def test_cli_commands_never_show_secrets_in_process(secret_scenarios, tmp_path, secret_state_file, monkeypatch,
                                                     capsys, caplog):
    """Every scenario x persist/restore/inventory/audit-blobs/anatomy through ``sekiops.cli.main``
    with -v: stdout, stderr and every log record (all loggers, DEBUG) free of secrets."""
    from sekiops.cli.main import main

    caplog.set_level(logging.DEBUG)
    failures = []
    for name, extra_env, store_args, sid, secrets in secret_scenarios:
        for k in ("COSMOS_KEY", "AZURE_STORAGE_CONNECTION_STRING", "SEKIOPS_STATE_URL", "SEKIOPS_BLOB_URL",
                  "PGPASSWORD"):
            monkeypatch.delenv(k, raising=False)
        for k, v in extra_env.items():
            monkeypatch.setenv(k, v)
        for cmd in _secret_commands(name, store_args, sid, tmp_path, secret_state_file):
            caplog.clear()
            try:
                rc = main(cmd)
            except SystemExit as exc:  # --help style exits only
                rc = exc.code
            cap = capsys.readouterr()
            logs = "\n".join(f"{r.name}: {r.getMessage()}" for r in caplog.records)
            what = f"{name}: sekiops {cmd[1]} (in-process, exit {rc})"
            try:
                assert rc in (0, 2), f"{what}: {cap.err[-1500:]}"
                _assert_no_secret(cap.out + cap.err + logs, secrets, what)
            except AssertionError as exc:
                failures.append(str(exc))
    assert not failures, "\n\n".join(failures)


def test_store_reprs_and_errors_hide_secrets(request, tmp_path, monkeypatch):
    """repr/str/location of every store kind, and the full traceback text of failed opens."""
    pg = request.getfixturevalue("postgres_server")
    azurite = request.getfixturevalue("azurite")
    cosmos = request.getfixturevalue("cosmos_server")
    pg_host = pg.url.rsplit("@", 1)[1]
    secrets = [PG_PW, COSMOS_SECRET_KEY, ACCOUNT_KEY, SAS_SIG, azurite.account_key]

    stores = [open_state_store("memory://sec"), open_blob_store("memory://sec"),
              open_state_store(f"sqlite:///{tmp_path}/s.db"), open_blob_store(str(tmp_path / "b"))]
    # a good Postgres password, shown nowhere either
    monkeypatch.setenv("PGPASSWORD", PG_PW)
    pg_store = open_state_store(pg.url)
    stores.append(pg_store)
    if len(pg.password) >= 6:
        secrets.append(pg.password)
    monkeypatch.setenv("COSMOS_KEY", cosmos.key)
    host = cosmos.endpoint.split("://", 1)[1].rstrip("/")
    stores.append(open_state_store(f"cosmos+https://{host}/secdb/multiProjectionStates?verify=false"))
    secrets.append(cosmos.key)
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite.connection_string)
    stores.append(open_blob_store("azblob://secrepr"))
    stores.append(open_blob_store(f"azblob://acct.blob.core.windows.net/c01?sv=2022-11-02&sp=r&sig={SAS_SIG}"))
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING",
                       f"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={ACCOUNT_KEY};")
    stores.append(open_blob_store("azblob://acct.blob.core.windows.net/c02"))
    for s in stores:
        for text, what in ((repr(s), "repr"), (str(s), "str"), (s.location, "location")):
            _assert_no_secret(text, secrets, f"{what} of {type(s).__name__}")
    for s in stores:
        s.close()

    failing = [
        lambda: open_state_store(f"postgresql://u:{quote(PG_PW)}@127.0.0.1:1/db"),
        lambda: open_state_store(f"postgresql://{pg.user}:{quote(PG_PW)}@{pg_host}"),
        lambda: open_state_store(f"postgresql://u:{quote(PG_PW)}@[bad"),
        lambda: open_state_store(f"postgresql://u@127.0.0.1:1/db?password={quote(PG_PW)}&sslmode=bogus"),
    ]
    monkeypatch.setenv("COSMOS_KEY", COSMOS_SECRET_KEY)
    failing.append(lambda: open_state_store("cosmos+https://127.0.0.1:1/db/c?verify=false"))
    monkeypatch.setenv("COSMOS_KEY", "not base64 " + PG_PW)
    failing.append(lambda: open_state_store("cosmos+https://127.0.0.1:1/db/c"))
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", f"AccountKey={ACCOUNT_KEY};garbage")
    failing.append(lambda: open_blob_store("azblob://c03").list().__next__())
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING",
                       f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={ACCOUNT_KEY};"
                       "BlobEndpoint=http://127.0.0.1:1/devstoreaccount1;")
    failing.append(lambda: open_blob_store("azblob://c04?retries=0").open_read("P/x.bin"))
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING",
                       f"DefaultEndpointsProtocol=http;AccountName={azurite.account_name};AccountKey={ACCOUNT_KEY};"
                       f"BlobEndpoint={azurite.blob_endpoint};")
    failing.append(lambda: open_blob_store("azblob://c05?retries=0").write(io.BytesIO(b"x"), "P"))
    for i, fn in enumerate(failing):
        try:
            fn()
        except Exception as exc:  # noqa: BLE001
            assert isinstance(exc, SekiopsError), f"case {i}: {type(exc).__name__}: {exc}"
            text = "".join(traceback.format_exception(exc)) + repr(exc) + repr(exc.args)
            _assert_no_secret(text, secrets + [ACCOUNT_KEY], f"exception of failing case {i}")
        else:
            pytest.fail(f"failing case {i} did not fail")


def test_logs_hide_secrets(request, tmp_path, monkeypatch, caplog):
    """Every log record (all loggers, DEBUG) during failing operations: no secret."""
    azurite = request.getfixturevalue("azurite")
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING",
                       f"DefaultEndpointsProtocol=http;AccountName={azurite.account_name};AccountKey={ACCOUNT_KEY};"
                       f"BlobEndpoint={azurite.blob_endpoint};")
    with pytest.raises(SekiopsError):
        open_blob_store("azblob://logtest?retries=1").write(io.BytesIO(b"x"), "P")
    with pytest.raises(SekiopsError):
        open_state_store(f"postgresql://u:{quote(PG_PW)}@127.0.0.1:1/db")
    monkeypatch.setenv("COSMOS_KEY", COSMOS_SECRET_KEY)
    with pytest.raises(SekiopsError):
        open_state_store("cosmos+https://127.0.0.1:1/db/c?verify=false")
    text = "\n".join(f"{r.name}: {r.getMessage()}" for r in caplog.records)
    _assert_no_secret(text, [PG_PW, COSMOS_SECRET_KEY, ACCOUNT_KEY, azurite.account_key], "log records")


@pytest.mark.parametrize("text,secret", [
    ("postgresql://user:hunter2pw@db:5432/x", "hunter2pw"),
    ("see https://acct.blob.core.windows.net/c?sv=1&sig=abcDEF123%2B&se=2", "abcDEF123%2B"),
    ("AccountName=a;AccountKey=S3cr3tKeyValue==;EndpointSuffix=x", "S3cr3tKeyValue=="),
    ("BlobEndpoint=x;SharedAccessSignature=sv=1&sig=ZZsecret", "ZZsecret"),
    ("Password=pw-secret-1;Host=db", "pw-secret-1"),
    ("cosmos+https://h/db?key=cosmoskeysecret", "cosmoskeysecret"),
    ("token=tok-secret-9 and pwd=pwd-secret-8", "tok-secret-9"),
])
def test_redact(text, secret):
    assert secret not in redact(text)


# --- 4. mutating commands need --execute ---------------------------------------------------------

#: every command `sekiops --help` lists, classified; a new command must be added here
COMMANDS = {
    "persist": "explicit-write",    # the explicit write, by contract
    "restore": "read-only",
    "inventory": "read-only",
    "anatomy": "read-only",
    "audit-blobs": "read-only",     # report only; deletion is `migrate run gc-blobs --execute`
    "logs": "read-only",            # reads an export file
    "metrics-import": "read-only",  # reads an export file
    "migrate": "group",             # plan (read-only), run/rollback (need --execute)
    "demo": "own-directory",        # builds a new demo deployment in its own --dir
    "bench": "writes-given-stores",
    "report": "read-only",          # reads export files and the stores; writes only its --out HTML
}
MIGRATE_ACTIONS = {"plan": "read-only", "run": "needs-execute", "rollback": "needs-execute"}


def _help(*args) -> str:
    res = _cli([*args, "--help"])
    assert res.returncode == 0, res.stderr.decode()
    return res.stdout.decode()


def _commands_in(help_text: str) -> list[str]:
    block = help_text.split("positional arguments:", 1)[1].split("options:", 1)[0]
    return re.findall(r"^    ([a-z][a-z0-9-]*)\s", block, re.M)


def test_every_command_is_classified():
    listed = _commands_in(_help())
    assert listed, "no commands found in `sekiops --help`"
    unknown = [c for c in listed if c not in COMMANDS]
    assert not unknown, f"classify these commands in test_security.COMMANDS (mutating => --execute): {unknown}"
    actions = _commands_in(_help("migrate"))
    assert set(actions) <= set(MIGRATE_ACTIONS), f"classify migrate actions: {set(actions) - set(MIGRATE_ACTIONS)}"


@pytest.mark.parametrize("action", [a for a, k in MIGRATE_ACTIONS.items() if k == "needs-execute"])
def test_migrate_actions_need_execute(action):
    text = _help("migrate", action)
    assert "--execute" in text and re.search(r"dry run", text, re.I)


def test_mutating_commands_all_need_execute():
    """Contract: mutating operations are dry runs unless --execute. BUG/finding: ``bench`` writes
    rows (service bench-<run id>) and blobs into the stores it is given and then deletes those
    blobs, leaving rows that point at deleted blobs, without --execute."""
    offenders = []
    for cmd, kind in COMMANDS.items():
        if kind == "writes-given-stores" and "--execute" not in _help(cmd):
            offenders.append(cmd)
    assert not offenders, f"commands that write to the stores they are given without --execute: {offenders}"


def _tree_digest(*paths: Path) -> str:
    h = hashlib.sha256()
    for base in paths:
        if base.is_file():
            h.update(base.read_bytes())
            continue
        for p in sorted(base.rglob("*")):
            h.update(str(p.relative_to(base)).encode())
            if p.is_file() and not p.is_symlink():
                h.update(p.read_bytes())
    return h.hexdigest()


def test_read_only_commands_change_nothing(tmp_path):
    state_url, blobs, _ = _small_store(tmp_path, offload=False)
    db = Path(state_url.split(":///", 1)[1])
    before = _tree_digest(db, blobs)
    store = ["--state", state_url, "--blob", str(blobs)]
    env = dict(os.environ, SEKIOPS_SPOOL_DIR=str(tmp_path / "spool"))
    runs = [
        ["restore", *store, "--projector", "Sec", "--out", str(tmp_path / "o.json"), "--verify"],
        ["inventory", *store, "--format", "json"],
        ["anatomy", *store, "--projector", "Sec", "--format", "json"],
        ["audit-blobs", *store, "--grace", "0s", "--format", "json"],
        ["migrate", "plan", *store, "offload", "--payload-level", "--threshold", "10", "--format", "json"],
        ["migrate", "run", *store, "offload", "--payload-level", "--threshold", "10",
         "--journal", str(tmp_path / "j1.jsonl")],
        ["migrate", "run", *store, "gc-blobs", "--grace", "0", "--journal", str(tmp_path / "j2.jsonl")],
    ]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda a: (a, _cli(a, env=env)), runs))
    for args, res in results:
        assert res.returncode == 0, f"{args[:2]}: {res.stderr.decode()[-800:]}"
    assert _tree_digest(db, blobs) == before, "a read-only command (or a dry run) changed the stores"


def test_read_only_commands_create_nothing(tmp_path):
    missing_db, missing_blobs = tmp_path / "nope" / "x.db", tmp_path / "no-blobs"
    (tmp_path / "nope").mkdir()
    store = ["--state", f"sqlite:///{missing_db}", "--blob", str(missing_blobs)]
    for args in (["restore", *store, "--projector", "P", "--out", str(tmp_path / "o.json")],
                 ["inventory", *store], ["anatomy", *store, "--projector", "P"], ["audit-blobs", *store]):
        res = _cli(args, env=dict(os.environ, SEKIOPS_SPOOL_DIR=str(tmp_path / "spool")))
        assert res.returncode == 2, res.stderr.decode()
        assert not missing_db.exists() and not missing_blobs.exists(), f"{args[0]} created a store"
        assert not (tmp_path / "o.json").exists()


# --- 5. static scans --------------------------------------------------------------------------------

_FORBIDDEN_CALLS = {"eval", "exec", "compile", "__import__", "os.system", "os.popen", "os.execv", "os.execl",
                    "os.execvp", "os.spawnl", "os.spawnv", "pty.spawn", "input"}
_FORBIDDEN_MODULES = {"pickle", "cPickle", "marshal", "shelve", "dill", "cloudpickle", "jsonpickle", "yaml"}


def _sources():
    files = sorted(SOURCES.rglob("*.py"))
    assert len(files) > 20
    return [(p, ast.parse(p.read_text(), str(p))) for p in files]


def test_no_code_execution_on_data():
    problems = []
    for path, tree in _sources():
        rel = path.relative_to(REPO)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                for m in mods:
                    if m.split(".")[0] in _FORBIDDEN_MODULES:
                        problems.append(f"{rel}:{node.lineno}: imports {m}")
            if not isinstance(node, ast.Call):
                continue
            name = ast.unparse(node.func)
            if name in _FORBIDDEN_CALLS:
                problems.append(f"{rel}:{node.lineno}: calls {name}")
            for kw in node.keywords:
                if kw.arg == "shell" and not (isinstance(kw.value, ast.Constant) and kw.value.value is False):
                    problems.append(f"{rel}:{node.lineno}: shell= in {name}")
            if name.startswith("subprocess.") and node.args and isinstance(node.args[0], (ast.Constant, ast.JoinedStr)):
                problems.append(f"{rel}:{node.lineno}: {name} with a command string (use an argv list)")
            if (name in ("importlib.import_module", "import_module") and node.args
                    and isinstance(node.args[0], ast.JoinedStr)):
                problems.append(f"{rel}:{node.lineno}: import of a formatted module name")
    assert not problems, "\n".join(problems)


def test_url_schemes_only_reach_sekiops_modules():
    """Plugins are chosen by URL scheme from registries; no URL can import an arbitrary module."""
    from sekiops.blob import REGISTRY as BLOBS
    from sekiops.state import REGISTRY as STATES

    for target in list(BLOBS.values()) + list(STATES.values()):
        assert target.startswith("sekiops."), target
    for url in ("os.system://x", "subprocess://x", "builtins://eval"):
        with pytest.raises(SekiopsError):
            open_state_store(url)
        with pytest.raises(SekiopsError):
            open_blob_store(url)


_SQL_WORDS = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|WHERE|FROM|PRAGMA|CREATE|DROP|ALTER|VALUES|SET)\b")
#: names that carry caller-supplied values: never formatted into query text
_VALUE_NAMES = {"service_id", "projector_name", "projector_version", "name", "version", "key", "prefix", "after",
                "cursor", "limit", "row", "expected", "value", "values_", "text", "url", "schema_name"}


def _module_constants(tree: ast.Module) -> set[str]:
    """Names bound at module level, and loop variables over module-level names (identifier lists)."""
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                for n in ast.walk(t):
                    if isinstance(n, ast.Name):
                        names.add(n.id)
    for node in ast.walk(tree):
        if isinstance(node, (ast.For, ast.comprehension)) and isinstance(node.iter, ast.Name) and node.iter.id in names:
            for n in ast.walk(node.target):
                if isinstance(n, ast.Name):
                    names.add(n.id)
    return names


def _params_by_node(tree):
    """Map each node to the parameter names of its innermost enclosing function."""
    out = {}

    def visit(node, params):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            a = node.args
            params = {x.arg for x in a.posonlyargs + a.args + a.kwonlyargs} - {"self", "cls"}
        out[id(node)] = params
        for child in ast.iter_child_nodes(node):
            visit(child, params)
    visit(tree, set())
    return out


def test_sql_is_parameterised():
    """SQL text never has values formatted into it (f-string, %, str.format); identifiers in
    PostgreSQL go through psycopg.sql (sql.SQL of constants only, sql.Identifier); Cosmos queries
    always pass parameters."""
    problems = []
    for path, tree in _sources():
        rel = path.relative_to(REPO)
        src = path.read_text()
        if not re.search(r"\.execute\(|query_items|sql\.SQL|executescript", src):
            continue
        consts = _module_constants(tree)
        params = _params_by_node(tree)
        for node in ast.walk(tree):
            # 1. formatted SQL text: only identifier material may be interpolated
            if isinstance(node, ast.JoinedStr):
                literal = "".join(v.value for v in node.values
                                  if isinstance(v, ast.Constant) and isinstance(v.value, str))
                if _SQL_WORDS.search(literal):
                    for fv in (v for v in node.values if isinstance(v, ast.FormattedValue)):
                        for n in ast.walk(fv.value):
                            ident = (n.id if isinstance(n, ast.Name)
                                     else n.attr if isinstance(n, ast.Attribute) else None)
                            if ident and (ident in params.get(id(node), set()) or ident in _VALUE_NAMES):
                                problems.append(f"{rel}:{node.lineno}: value {ident!r} formatted into SQL text")
            if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod) and isinstance(node.left, ast.Constant) \
                    and isinstance(node.left.value, str) and _SQL_WORDS.search(node.left.value):
                problems.append(f"{rel}:{node.lineno}: SQL built with the % operator")
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                f = node.func
                if f.attr == "format" and isinstance(f.value, ast.Constant) and isinstance(f.value.value, str) \
                        and _SQL_WORDS.search(f.value.value):
                    problems.append(f"{rel}:{node.lineno}: SQL built with str.format (use sql.SQL(...).format)")
                # 2. psycopg.sql.SQL only on constants
                if f.attr == "SQL" and isinstance(f.value, ast.Name) and f.value.id == "sql" and node.args:
                    arg = node.args[0]
                    if not (isinstance(arg, ast.Constant) or (isinstance(arg, ast.Name) and arg.id in consts)):
                        problems.append(f"{rel}:{node.lineno}: sql.SQL({ast.unparse(arg)[:60]}) of a non-constant")
                # 3. Cosmos: a query built in code always passes parameters (a literal needs none)
                if f.attr == "query_items" and node.args and not isinstance(node.args[0], ast.Constant) \
                        and not any(k.arg == "parameters" for k in node.keywords):
                    problems.append(f"{rel}:{node.lineno}: query_items without parameters=")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_injection_through_names_is_inert(kind, request, tmp_path):
    """Quotes and SQL in projector names and versions are stored and read back literally."""
    url = f"sqlite:///{tmp_path}/i.db" if kind == "sqlite" else request.getfixturevalue("postgres_server").url
    sid = "inj-" + uuid.uuid4().hex[:8]
    state = open_state_store(url, service_id=sid)
    blob = open_blob_store(str(tmp_path / "blobs"))
    name = "O'Brien\"; DROP TABLE dcb_multi_projection_states; --"
    version = "1' OR '1'='1"
    persist_stream(state, blob, io.BytesIO(b'{"x":1}'), projector_name=name, projector_version=version,
                   events_processed=1, last_sortable_unique_id=SLUI)
    persist_stream(state, blob, io.BytesIO(b'{"x":2}'), projector_name="Other", projector_version="1",
                   events_processed=1, last_sortable_unique_id=SLUI)
    assert state.get(name, "1") is None  # the OR '1'='1' did not widen the match
    out = io.BytesIO()
    restore(state, blob, out, projector_name=name, projector_version=version)
    assert out.getvalue() == b'{"x":1}'
    from sekiops.state.base import iter_rows
    assert sorted(r.projector_name for r in iter_rows(state)) == sorted([name, "Other"])
    state.close()
