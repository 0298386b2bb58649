"""Backups and restores against another local user (issue 13, items 1 and 2, and the backup dir).

The attacker (uid 65534, the ``attacker`` fixture) can write a backup directory that is
world-writable with the sticky bit (as ``/tmp``), or one shared on purpose through
``RESUMABLE_SHARED_DIRS``; and the directory a file is restored to, when that one is sticky.
Each test plants what the issue describes and checks what a user needs: the victim file
unchanged (bytes and mode), nothing created outside, nothing setuid anywhere, and an error that
names the path and says why.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import sqlite3
import stat
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import structlog
import xxhash
from conftest import ATTACKER, Attacker, sticky_dir

import resumable
from resumable import _fs
from resumable._fs import faults
from resumable.backup import BackupInfo, Backups
from resumable.errors import UnsafePath

SECRET = "the team's backup secret"
#: The id of every forged backup: a well-formed id no real backup here has.
FORGED_ID = "20261201T000000.000000Z-deadbeef"
PAYLOAD = b"#!/bin/sh\necho owned\n"


# --- what the attacker plants -----------------------------------------------------------------


def _canonical(doc: dict) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def forge(
    directory: Path,
    *,
    source_path: Path,
    mode: int = 0o4755,
    data: bytes = PAYLOAD,
    data_file: str | None = None,
    fmt: int = 2,
    seal: str | None = None,
    owner: int | None = ATTACKER,
    backup_id: str = FORGED_ID,
) -> Path:
    """A manifest (and its copy) as anyone can write them: every checksum is xxh3 (public).

    ``owner`` None leaves them the current user's (as if the attacker got root to write them,
    or a genuine manifest was tampered with in place). Returns the manifest's path.
    """
    name = data_file if data_file is not None else f"x.{backup_id}.bak"
    if data_file is None:
        copy = directory / name
        copy.write_bytes(data)
        if owner is not None:
            os.chown(copy, owner, owner)
    checksum = xxhash.xxh3_128_hexdigest(data)
    doc: dict = {
        "format": fmt,
        "algorithm": "xxh3_128",
        "backup_id": backup_id,
        "source_path": str(source_path),
        "data_file": name,
        "timestamp": "2026-12-01T00:00:00.000000+00:00",
        "size_bytes": len(data),
        "checksum": checksum,
        "kind": "file",
        "mode": mode,
        "state": {"files": [[len(data), 0], None], "taken_ns": 0},
        "source_digest": checksum,
    }
    if fmt == 2:
        doc["seal"] = seal if seal is not None else xxhash.xxh3_128_hexdigest(_canonical(doc))
    manifest = directory / f"{backup_id}.json"
    manifest.write_text(json.dumps(doc))
    if owner is not None:
        os.chown(manifest, owner, owner)
    return manifest


def backed_up(tmp_path: Path, source: Path, data: bytes) -> tuple[Backups, BackupInfo]:
    """``source`` holding ``data``, backed up into ``tmp_path/backups``."""
    source.write_bytes(data)
    backups = Backups(tmp_path / "backups")
    return backups, backups.create(source)


def cli(*args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m resumable ARGS`` in a process of its own (extra environment: ``env``)."""
    return subprocess.run(
        [sys.executable, "-m", "resumable", *args],
        capture_output=True, text=True, timeout=timeout, check=False,
        env={**os.environ, **env},
    )  # fmt: skip


@pytest.fixture
def sticky(tmp_path: Path) -> Path:
    """A backup directory every user can add files to (mode 1777, as /tmp): accepted."""
    return sticky_dir(tmp_path / "public-backups")


@pytest.fixture
def shared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A backup directory shared with other users on purpose (RESUMABLE_SHARED_DIRS, 0777)."""
    folder = tmp_path / "team-backups"
    folder.mkdir()
    folder.chmod(0o777)
    monkeypatch.setenv("RESUMABLE_SHARED_DIRS", str(folder))
    return folder


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A root-owned file outside every store and backup directory."""
    folder = tmp_path / "outside"
    folder.mkdir()
    path = folder / "passwd"
    path.write_bytes(b"root:x:0:0:root:/root:/bin/sh\n")
    path.chmod(0o644)
    return path


@pytest.fixture
def signed(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """RESUMABLE_SECRET set, and the library told to read it again."""
    monkeypatch.setenv("RESUMABLE_SECRET", SECRET)
    resumable.configure()
    yield
    monkeypatch.delenv("RESUMABLE_SECRET")
    resumable.configure()


def snapshot(path: Path) -> tuple[bytes, int, int]:
    st = path.lstat()
    return path.read_bytes(), st.st_mode, st.st_nlink


def setuid_files(root: Path) -> list[Path]:
    found = []
    for folder, _, names in os.walk(root):
        for name in names:
            st = os.lstat(Path(folder) / name)
            if st.st_mode & (stat.S_ISUID | stat.S_ISGID):
                found.append(Path(folder) / name)
    return found


def attempt(call: Callable[..., object], *args: object) -> Exception | None:
    """The error ``call(*args)`` raised (None if it returned): outcomes are checked first."""
    try:
        call(*args)
    except (ValueError, OSError) as exc:
        return exc
    return None


def refused_events(logs: list[dict]) -> list[dict]:
    return [e for e in logs if e["event"] == "resumable.backup.manifest_refused"]


# --- item 1: a forged manifest ----------------------------------------------------------------


@pytest.mark.parametrize("where", ["sticky", "shared"])
@pytest.mark.parametrize("fmt", [1, 2])
def test_forged_manifest_writes_nothing_anywhere_and_nothing_setuid(
    tmp_path: Path, attacker: Attacker, request: pytest.FixtureRequest, where: str, fmt: int
) -> None:
    """The issue's attack: source_path=<bin>/x, mode 04755, the attacker's bytes. No file
    appears there, nothing anywhere is setuid, and the error says why the manifest is refused."""
    folder: Path = request.getfixturevalue(where)
    bin_dir = tmp_path / "usr-local-bin"
    bin_dir.mkdir()
    target = bin_dir / "x"
    forge(folder, source_path=target, fmt=fmt)
    backups = Backups(folder)

    errors = []
    for to in (None, tmp_path / "elsewhere"):  # nor to a path of the caller's choice
        try:
            backups.restore(FORGED_ID, to)
        except ValueError as exc:
            errors.append(str(exc))
    assert list(bin_dir.iterdir()) == []
    assert not (tmp_path / "elsewhere").exists()
    assert setuid_files(tmp_path) == []
    assert len(errors) == 2
    assert str(folder / f"{FORGED_ID}.json") in errors[0]
    assert re.search(rf"backup {FORGED_ID} is refused: .*(owned by|unsafe)", errors[0])
    with pytest.raises(ValueError, match="refused"):
        backups.verify(FORGED_ID)
    with structlog.testing.capture_logs() as logs:
        assert backups.list() == []  # skipped, with a warning naming it
    assert [Path(e["path"]).name for e in refused_events(logs)] == [f"{FORGED_ID}.json"]


def test_forged_data_file_outside_the_backup_dir_is_never_read(
    tmp_path: Path, shared: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """data_file "../../<root-only file>", restored where the attacker wants it with mode 0666:
    refused before the file is opened, even for a manifest that passes the owner check."""
    secret_file = tmp_path / "root-only" / "shadow"
    secret_file.parent.mkdir()
    secret_file.write_bytes(b"root:$6$hash:19000::::::\n")
    secret_file.chmod(0o600)
    loot = tmp_path / "loot"
    relative = os.path.relpath(secret_file, shared)
    assert relative.startswith("..")
    forge(
        shared,
        source_path=loot,
        mode=0o666,
        data=secret_file.read_bytes(),  # the worst case: the attacker knows its checksum
        data_file=relative,
        owner=None,
    )
    reads: list[Path] = []

    def record(op: str, path: Path) -> None:
        if op == "read":
            reads.append(Path(path))

    monkeypatch.setattr(faults, "hook", record)
    with pytest.raises(ValueError, match=r"data_file .* is not a name of this backup's copy"):
        Backups(shared).restore(FORGED_ID)
    monkeypatch.setattr(faults, "hook", None)
    assert reads == [shared / f"{FORGED_ID}.json"]  # the manifest only
    assert not loot.exists()
    assert secret_file.stat().st_mode & 0o777 == 0o600


def test_with_a_secret_a_forged_manifest_is_refused_even_when_yours(
    tmp_path: Path, victim: Path, signed: None
) -> None:
    """With RESUMABLE_SECRET set, a manifest must carry its HMAC: one the current user owns
    but that is unsigned, signed with another secret, signed as a record, or edited after
    signing, is refused; a genuine signed backup restores."""
    folder = tmp_path / "backups"
    source = tmp_path / "app.conf"
    source.write_bytes(b"genuine\n")
    backups = Backups(folder)
    info = backups.create(source)
    genuine = json.loads((folder / f"{info.backup_id}.json").read_text())
    assert genuine["format"] == 2 and genuine["seal"].startswith("m1:")
    before = snapshot(victim)

    def tagged(doc: dict, key: bytes, tag: bytes) -> str:
        body = {k: v for k, v in doc.items() if k != "seal"}
        message = tag + struct.pack("<Q", 0) + _canonical(body)
        return "m1:" + hmac.new(key, message, hashlib.sha256).hexdigest()

    manifest_tag = b"resumable:backup-manifest\0"
    assert genuine["seal"] == tagged(genuine, SECRET.encode(), manifest_tag)  # HMAC-SHA256

    ids = [f"20261201T00000{n}.000000Z-deadbeef" for n in range(6)]
    forge(folder, source_path=victim, backup_id=ids[0], owner=None)  # xxh3 seal
    forge(folder, source_path=victim, backup_id=ids[1], owner=None, fmt=1)  # no seal
    forge(folder, source_path=victim, backup_id=ids[2], owner=None, seal="m1:" + "0" * 64)
    theirs = forge(folder, source_path=victim, backup_id=ids[3], owner=None)
    doc = json.loads(theirs.read_text())
    doc["seal"] = tagged(doc, b"another secret", manifest_tag)
    theirs.write_text(json.dumps(doc))
    as_record = forge(folder, source_path=victim, backup_id=ids[4], owner=None)
    doc = json.loads(as_record.read_text())
    doc["seal"] = tagged(doc, SECRET.encode(), b"resumable:checkpoint\0")
    as_record.write_text(json.dumps(doc))
    # A genuine signed manifest, its copy and source path changed, its seal kept.
    edited = dict(genuine, backup_id=ids[5], source_path=str(victim))
    edited["data_file"] = f"x.{ids[5]}.bak"
    (folder / edited["data_file"]).write_bytes((folder / genuine["data_file"]).read_bytes())
    (folder / f"{ids[5]}.json").write_text(json.dumps(edited))

    reasons = {
        ids[0]: "is not signed",
        ids[1]: "format 1",
        ids[2]: "does not match its signature",
        ids[3]: "does not match its signature",
        ids[4]: "does not match its signature",
        ids[5]: "does not match its signature",
    }
    with structlog.testing.capture_logs() as logs:
        assert [b.backup_id for b in backups.list()] == [info.backup_id]
    assert len(refused_events(logs)) == len(ids)
    for backup_id, why in reasons.items():
        with pytest.raises(ValueError, match=why):
            backups.restore(backup_id)
        with pytest.raises(ValueError, match=why):
            backups.restore(backup_id, tmp_path / "copy")
    assert snapshot(victim) == before
    assert not (tmp_path / "copy").exists()
    assert setuid_files(tmp_path) == []
    source.write_bytes(b"changed\n")
    assert backups.restore(info.backup_id) == str(source)
    assert source.read_bytes() == b"genuine\n"


def test_a_manifest_of_another_user_is_refused_without_a_secret(
    tmp_path: Path, shared: Path, attacker: Attacker
) -> None:
    """In a directory shared on purpose, where another user's files are accepted, their
    manifest still is not: without a secret nothing proves who wrote it. list() skips it,
    restore() and verify() say why, `resumable verify` names it."""
    source = tmp_path / "notes.txt"
    source.write_bytes(b"mine\n")
    backups = Backups(shared)
    info = backups.create(source)
    attacker.own(shared / f"{info.backup_id}.json")
    source.write_bytes(b"changed\n")
    with structlog.testing.capture_logs() as logs:
        assert backups.list() == []
    assert len(refused_events(logs)) == 1
    for call in (backups.restore, backups.verify):
        with pytest.raises(ValueError, match=r"owned by .*uid 65534.*no secret is set"):
            call(info.backup_id)
    assert source.read_bytes() == b"changed\n"
    proc = cli(
        "verify", "--backup-dir", str(shared), "--store", f"sqlite:///{tmp_path}/n.db", "--json"
    )
    assert proc.returncode == 1, proc
    bad = json.loads(proc.stdout)["bad"]
    assert [b["name"] for b in bad] == [info.backup_id]
    assert "owned by" in bad[0]["problem"]


def test_a_signed_manifest_of_a_teammate_is_accepted_in_a_shared_dir(
    tmp_path: Path, shared: Path, attacker: Attacker, signed: None
) -> None:
    """With the secret, a manifest's signature proves who wrote it: a teammate's (another
    owner) restores in a directory shared on purpose."""
    source = tmp_path / "team.txt"
    source.write_bytes(b"team\n")
    backups = Backups(shared)
    info = backups.create(source)
    attacker.own(shared / f"{info.backup_id}.json")
    attacker.own(Path(info.backup_path))
    source.write_bytes(b"changed\n")
    assert backups.restore(info.backup_id) == str(source)
    assert source.read_bytes() == b"team\n"


def test_restore_applies_permission_bits_only(tmp_path: Path) -> None:
    """A genuine backup of a setuid file restores without setuid/setgid; restoring over a
    setuid file of one's own drops those bits too."""
    source = tmp_path / "tool"
    source.write_bytes(b"#!/bin/sh\n")
    source.chmod(0o6755)
    backups = Backups(tmp_path / "backups")
    info = backups.create(source)
    fresh = Path(backups.restore(info.backup_id, tmp_path / "fresh"))
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o755
    assert stat.S_IMODE(Path(backups.restore(info.backup_id)).stat().st_mode) == 0o755
    assert setuid_files(tmp_path) == []


def test_format_1_manifests_restore_without_a_secret_and_are_refused_with_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A manifest written before signing (format 1, no seal) keeps working without a secret;
    with one it is refused with what to do, and a new backup (signed) is made, not deduped."""
    folder = tmp_path / "backups"
    folder.mkdir(mode=0o700)
    source = tmp_path / "old.txt"
    source.write_bytes(b"old backup\n")
    forge(folder, source_path=source, data=b"old backup\n", fmt=1, owner=None, mode=0o640)
    source.write_bytes(b"changed\n")
    backups = Backups(folder)
    assert [b.backup_id for b in backups.list()] == [FORGED_ID]
    assert backups.verify(FORGED_ID)
    backups.restore(FORGED_ID)
    assert source.read_bytes() == b"old backup\n"

    monkeypatch.setenv("RESUMABLE_SECRET", SECRET)
    resumable.configure()
    with pytest.raises(ValueError, match=r"format 1.*back the file up again") as err:
        backups.restore(FORGED_ID)
    assert "RESUMABLE_SECRET unset" in str(err.value)
    assert backups.list() == []
    made = backups.create(source)
    assert made.backup_id != FORGED_ID
    assert [b.backup_id for b in backups.list()] == [made.backup_id]


# --- item 2: the restore destination ---------------------------------------------------------


@pytest.fixture
def public(tmp_path: Path) -> Path:
    """A directory files are restored to that every user can add names to (1777, as /tmp)."""
    return sticky_dir(tmp_path / "public")


@pytest.mark.parametrize("link_owner", ["attacker", "root"])
def test_restore_never_follows_a_symlink_at_the_destination(
    tmp_path: Path, public: Path, victim: Path, attacker: Attacker, link_owner: str
) -> None:
    """`ln -s VICTIM dest`, then restore to dest: refused, naming dest; VICTIM unchanged, the
    link left as it was."""
    source = tmp_path / "report.txt"
    backups, info = backed_up(tmp_path, source, b"backed up\n")
    dest = public / "report.txt"
    if link_owner == "attacker":
        attacker.symlink(dest, victim)
    else:
        dest.symlink_to(victim)
    before = snapshot(victim)
    err = attempt(backups.restore, info.backup_id, dest)
    assert snapshot(victim) == before
    assert dest.is_symlink() and os.readlink(dest) == str(victim)
    assert sorted(os.listdir(public)) == ["report.txt"]
    assert isinstance(err, UnsafePath)
    assert str(dest) in str(err) and "symbolic link" in str(err)


def test_restore_refuses_a_source_that_became_a_symlink(
    tmp_path: Path, public: Path, victim: Path, attacker: Attacker
) -> None:
    """The backed-up file is gone and the attacker put a link to VICTIM in its place: a
    restore to the source path refuses it."""
    source = public / "app.conf"
    backups, info = backed_up(tmp_path, source, b"setting=1\n")
    source.unlink()
    attacker.symlink(source, victim)
    before = snapshot(victim)
    err = attempt(backups.restore, info.backup_id)
    assert snapshot(victim) == before
    assert isinstance(err, UnsafePath)
    assert re.search(f"{source}.*symbolic link", str(err))


def test_a_backup_never_follows_another_users_symlink_to_its_source(
    tmp_path: Path, public: Path, victim: Path, attacker: Attacker
) -> None:
    """The attacker's link in place of the file to back up: following it would record the
    victim as the source, and a later restore would write the victim. Refused, naming the
    link; a link of your own is followed (the backup records the real file)."""
    source = public / "app.db"
    attacker.symlink(source, victim)
    backups = Backups(tmp_path / "backups")
    before = snapshot(victim)
    err = attempt(backups.create, source)
    assert isinstance(err, UnsafePath)
    assert re.search(f"{source}.*symbolic link owned by", str(err))
    assert backups.list() == []
    assert snapshot(victim) == before

    mine = tmp_path / "mine.txt"
    mine.write_bytes(b"mine\n")
    link = tmp_path / "link.txt"
    link.symlink_to(mine)
    assert backups.create(link).source_path == str(mine)


def test_restore_refuses_a_hard_link_to_a_root_file(
    tmp_path: Path, public: Path, victim: Path
) -> None:
    """dest is a second name of a root file: overwriting it in place would change that file;
    replacing it would leave a trap. Refused, VICTIM unchanged."""
    source = tmp_path / "data.txt"
    backups, info = backed_up(tmp_path, source, b"backed up\n")
    dest = public / "data.txt"
    os.link(victim, dest)
    before = snapshot(victim)
    err = attempt(backups.restore, info.backup_id, dest)
    assert snapshot(victim) == before
    assert isinstance(err, UnsafePath)
    assert re.search(f"{dest}.*2 hard links", str(err))


def test_a_restores_own_safety_link_left_behind_is_not_a_foreign_link(tmp_path: Path) -> None:
    """A restore interrupted in a process still alive leaves its safety link (the same file
    under ``<name>.pre-restore.tmp-...<pid>``): the next restore goes through. (Found by
    test_properties' FailsafeMachine: crash_during_restore, then restore.)"""
    source = tmp_path / "data.txt"
    backups, info = backed_up(tmp_path, source, b"backed up\n")
    source.write_bytes(b"changed\n")
    os.link(source, tmp_path / f"data.txt.pre-restore{_fs.TEMP_MARK}0123456789ab.{os.getpid()}")
    assert backups.restore(info.backup_id) == str(source)
    assert source.read_bytes() == b"backed up\n"


def _database(path: Path, rows: int) -> None:
    con = sqlite3.connect(path)
    with con:
        con.execute("CREATE TABLE t (v TEXT)")
        con.executemany("INSERT INTO t VALUES (?)", [(f"row {i}" * 20,) for i in range(rows)])
    con.close()


def test_a_database_restore_checks_the_destination_before_sqlite_opens_it(
    tmp_path: Path, public: Path, attacker: Attacker
) -> None:
    """The live-database path: a hard link to a root database, and a database whose -wal is
    the attacker's link to a victim, are refused before SQLite opens anything."""
    source = tmp_path / "app.db"
    _database(source, 50)
    backups = Backups(tmp_path / "backups")
    info = backups.create(source)
    assert json.loads((backups.dir / f"{info.backup_id}.json").read_text())["kind"] == "sqlite"

    root_db = tmp_path / "outside" / "root.db"
    root_db.parent.mkdir()
    _database(root_db, 3)
    linked = public / "linked.db"
    os.link(root_db, linked)
    before = snapshot(root_db)
    err = attempt(backups.restore, info.backup_id, linked)
    assert snapshot(root_db) == before
    assert not Path(f"{root_db}-wal").exists()
    assert not Path(f"{linked}-wal").exists()
    assert isinstance(err, UnsafePath)
    assert re.search(f"{linked}.*hard links", str(err))

    victim = tmp_path / "outside" / "victim.log"
    victim.write_bytes(b"important\n")
    mine = public / "mine.db"
    _database(mine, 3)
    attacker.symlink(Path(f"{mine}-wal"), victim)
    err = attempt(backups.restore, info.backup_id, mine)
    assert victim.read_bytes() == b"important\n"
    assert isinstance(err, UnsafePath)
    assert re.search(f"{mine}-wal.*symbolic link", str(err))


def test_restore_refuses_another_users_file_at_the_destination(
    tmp_path: Path, public: Path, attacker: Attacker
) -> None:
    """A file the attacker planted at dest (theirs) is not replaced: whoever owns it may hold
    it open, and the restore would take its name."""
    source = tmp_path / "data.txt"
    backups, info = backed_up(tmp_path, source, b"backed up\n")
    dest = attacker.file(public / "data.txt", b"theirs\n")
    err = attempt(backups.restore, info.backup_id, dest)
    assert dest.read_bytes() == b"theirs\n"
    assert isinstance(err, UnsafePath)
    assert re.search(f"{dest}.*owned by", str(err))


def test_restore_into_an_attackers_directory_is_refused(tmp_path: Path, attacker: Attacker) -> None:
    """A destination directory that another user owns (they could swap names in it) is
    refused before anything is written there."""
    source = tmp_path / "data.txt"
    backups, info = backed_up(tmp_path, source, b"backed up\n")
    theirs = attacker.dir(tmp_path / "theirs", 0o755)
    err = attempt(backups.restore, info.backup_id, theirs / "data.txt")
    assert list(theirs.iterdir()) == []
    assert isinstance(err, UnsafePath)
    assert re.search(f"{theirs}.*owned by", str(err))


def test_cli_restore_of_a_forged_manifest_and_to_a_symlink(
    tmp_path: Path, shared: Path, public: Path, victim: Path, attacker: Attacker
) -> None:
    """Through `python -m resumable restore`: a forged manifest is one error line naming it,
    exit 1, nothing written; a restore to the attacker's symlink is one line naming dest."""
    target = tmp_path / "bin" / "x"
    target.parent.mkdir()
    forge(shared, source_path=target)
    # (the CLI inherits RESUMABLE_SHARED_DIRS from the environment)

    proc = cli("restore", FORGED_ID, "--backup-dir", str(shared))
    assert not target.exists()
    assert setuid_files(tmp_path) == []
    assert proc.returncode == 1, proc
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("resumable: error: backup " + FORGED_ID)
    assert f"{FORGED_ID}.json" in proc.stderr
    listed = cli("backups", "--backup-dir", str(shared), "--json")
    assert listed.returncode == 0, listed
    assert json.loads(listed.stdout)["count"] == 0

    source = tmp_path / "notes.txt"
    source.write_bytes(b"notes\n")
    folder = tmp_path / "backups"
    made = cli("backup", str(source), "--backup-dir", str(folder), "--json")
    backup_id = json.loads(made.stdout)["backup"]["backup_id"]
    dest = attacker.symlink(public / "notes.txt", victim)
    before = snapshot(victim)
    proc = cli("restore", backup_id, "--backup-dir", str(folder), "--to", str(dest))
    assert proc.returncode == 1, proc
    assert len(proc.stderr.splitlines()) == 1
    assert str(dest) in proc.stderr and "symbolic link" in proc.stderr
    assert snapshot(victim) == before


# --- the backup directory itself --------------------------------------------------------------


def test_a_backup_directory_of_another_user_or_open_to_all_is_refused(
    tmp_path: Path, attacker: Attacker
) -> None:
    """An attacker's backup directory, a world-writable one without the sticky bit, and the
    attacker's symlink to a root directory are refused when the Backups is made; nothing is
    written in the directory the link points to."""
    theirs = attacker.dir(tmp_path / "theirs", 0o755)
    with pytest.raises(UnsafePath, match="owned by"):
        Backups(theirs)
    with pytest.raises(UnsafePath, match="owned by"):
        Backups(theirs / "below")
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    with pytest.raises(UnsafePath, match="every user can write it"):
        Backups(open_dir)
    root_dir = tmp_path / "etc"
    root_dir.mkdir()
    public = tmp_path / "pub"
    public.mkdir()
    public.chmod(0o1777)
    attacker.symlink(public / "backups", root_dir)
    with pytest.raises(UnsafePath, match="symbolic link owned by"):
        Backups(public / "backups")
    assert list(root_dir.iterdir()) == []


def test_a_planted_lock_and_planted_strays_never_lead_outside(
    tmp_path: Path, sticky: Path, victim: Path, attacker: Attacker
) -> None:
    """In a sticky backup directory the attacker plants `.lock` as a link to a path that does
    not exist yet, and leftover-looking links to VICTIM: no file appears at the lock's target,
    VICTIM is unchanged, and `resumable gc` removes only the links."""
    target = tmp_path / "outside" / "created-by-root"
    attacker.symlink(sticky / ".lock", target)
    source = tmp_path / "notes.txt"
    source.write_bytes(b"notes\n")
    backups = Backups(sticky)
    with pytest.raises(UnsafePath, match=r"\.lock"):
        backups.create(source)
    assert not target.exists()
    (sticky / ".lock").unlink()

    backups.create(source)
    stray = sticky / f"passwd.{FORGED_ID}.bak"  # a copy no manifest commits
    attacker.symlink(stray, victim)
    temp = sticky / f"x.{FORGED_ID}.bak{_fs.TEMP_MARK}0123456789ab.1"
    attacker.symlink(temp, victim)
    before = snapshot(victim)
    proc = cli("gc", "--backup-dir", str(sticky), "--store", f"sqlite:///{tmp_path}/n.db", "--json")
    assert proc.returncode == 0, proc
    assert not stray.is_symlink() and not temp.is_symlink()
    assert snapshot(victim) == before
    assert len(backups.list()) == 1


def test_a_manifest_that_is_a_fifo_or_a_link_to_dev_zero_does_not_hang_the_cli(
    tmp_path: Path, shared: Path, attacker: Attacker
) -> None:
    """`resumable backups` on a directory holding a FIFO and a link to /dev/zero as manifests
    ends at once and lists the genuine backup only."""
    source = tmp_path / "notes.txt"
    source.write_bytes(b"notes\n")
    info = Backups(shared).create(source)
    attacker.fifo(shared / "20261201T000000.000000Z-00000001.json")
    attacker.symlink(shared / "20261201T000000.000000Z-00000002.json", "/dev/zero")
    shared_dirs = {"RESUMABLE_SHARED_DIRS": str(shared)}
    proc = cli("backups", "--backup-dir", str(shared), "--json", timeout=30, **shared_dirs)
    assert proc.returncode == 0, proc
    assert [b["backup_id"] for b in json.loads(proc.stdout)["backups"]] == [info.backup_id]


def test_a_symlink_to_a_directory_as_restore_path_only_if_yours(
    tmp_path: Path, public: Path, attacker: Attacker
) -> None:
    """Your (or root's) symlink to a directory as restore_path receives the file, as the
    directory would; the attacker's symlink to a directory is refused, and nothing lands in
    the directory it points to."""
    source = tmp_path / "notes.txt"
    backups, info = backed_up(tmp_path, source, b"notes\n")
    mine = tmp_path / "restored"
    mine.mkdir()
    (tmp_path / "to-restored").symlink_to(mine)
    assert backups.restore(info.backup_id, tmp_path / "to-restored") == str(mine / "notes.txt")
    assert (mine / "notes.txt").read_bytes() == b"notes\n"

    target = tmp_path / "root-dir"
    target.mkdir()
    link = attacker.symlink(public / "to-root-dir", target)
    err = attempt(backups.restore, info.backup_id, link)
    assert list(target.iterdir()) == []
    assert isinstance(err, UnsafePath)
    assert re.search(f"{link}.*symbolic link owned by", str(err))
