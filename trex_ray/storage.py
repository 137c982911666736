"""The run's shared storage: where trials put what they write, on any pyarrow filesystem.

On a cluster the driver's disk is not the workers' disk. Everything a trial writes (its node
folder: model, predictions, outcome; the recipe cache; Tune's and Train's results and
checkpoints) goes to ``run.storage``: a local or NFS path, or ``s3://bucket/prefix`` /
``gs://bucket/prefix`` (pyarrow.fs; credentials come from the usual environment variables or
instance roles, never from the config). Query options that pyarrow understands, such as
``?endpoint_override=host:port&scheme=http`` for MinIO or another S3-compatible store, are kept.

With a local path nothing is copied: workers write in place, as on one machine. With an object
store a trial writes to a scratch folder on its own node and uploads it when it ends; readers
(the final evaluation, the export, a warm start) download what they need. Uploads of single
files are one PUT, so a reader never sees half an object; folders are uploaded file by file
and published last by their ``outcome.json`` (a trial that died mid-upload has none).

The driver keeps its ledger on its own disk (appends are fsynced there) and mirrors the run's
small files (ledger, config, tree, summary, report) to the storage, so a new driver on another
machine can resume from it (``launch.py --resume s3://...``).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlsplit

log = logging.getLogger(__name__)

REMOTE_SCHEMES = ("s3", "gs", "gcs", "hdfs", "abfs", "abfss")
# the driver's small files, mirrored to remote storage so any machine can resume the run
MIRRORED = ("events.jsonl", "config.yaml", "tree.json", "summary.json", "report.html", "report.md",
            "requirement.json", "llm_expansions.jsonl", "llm_spend.json")


def is_remote(uri: str | os.PathLike | None) -> bool:
    return bool(uri) and urlsplit(str(uri)).scheme in REMOTE_SCHEMES


def as_local(uri: str) -> str:
    """A ``file://`` URI as the local path it names (anything else unchanged): pathlib would
    read ``file:///data/runs`` as a relative folder ``file:/data/runs``."""
    parts = urlsplit(str(uri))
    if parts.scheme != "file":
        return str(uri)
    if parts.netloc not in ("", "localhost"):
        from trex_ray.config import ConfigError

        raise ConfigError(f"{uri}: a file:// URI names a path on this machine (file:///path), not one on {parts.netloc}")
    return unquote(parts.path) or "/"


class RunStorage:
    """One run's storage root. Cheap to build from its URI, so it travels as a string (Ray
    pickles task arguments; filesystem objects carry connections and credentials)."""

    def __init__(self, uri: str | os.PathLike) -> None:
        import pyarrow.fs as pafs

        self.uri = str(uri)
        parts = urlsplit(self.uri)
        self.remote = parts.scheme in REMOTE_SCHEMES
        if self.remote:
            self.fs, base = pafs.FileSystem.from_uri(self.uri)
            self.base = base.rstrip("/")
            self._scheme, self._query = parts.scheme, parts.query
        else:
            self.fs = pafs.LocalFileSystem()
            self.base = str(Path(as_local(self.uri)).expanduser().resolve())

    def __repr__(self) -> str:
        return f"RunStorage({self.display()})"

    def display(self) -> str:
        """The root without query options (they may name endpoints, never keys, but stay out of logs)."""
        return f"{self._scheme}://{self.base}" if self.remote else self.base

    def path(self, rel: str = "") -> str:
        """``rel`` as a path on ``self.fs`` (what pyarrow, Tune and Train take with the filesystem)."""
        return f"{self.base}/{rel}".rstrip("/") if rel else self.base

    def uri_for(self, rel: str) -> str:
        """A URI naming ``rel`` that ``fetch`` (on any machine) can read back."""
        if not self.remote:
            return self.path(rel)
        return f"{self._scheme}://{self.path(rel)}" + (f"?{self._query}" if self._query else "")

    # ------------------------------------------------------------------ files
    def exists(self, rel: str) -> bool:
        import pyarrow.fs as pafs

        return self.fs.get_file_info(self.path(rel)).type != pafs.FileType.NotFound

    def list_dir(self, rel: str) -> list[str]:
        """Names directly under ``rel`` (empty when it does not exist)."""
        import pyarrow.fs as pafs

        infos = self.fs.get_file_info(pafs.FileSelector(self.path(rel), allow_not_found=True))
        return sorted(i.base_name for i in infos)

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Atomic: a local file is written beside and renamed, an object is one PUT."""
        if not self.remote:
            p = Path(self.path(rel))
            p.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, p)
            return
        with self.fs.open_output_stream(self.path(rel)) as f:
            f.write(data)

    def read_bytes(self, rel: str) -> bytes:
        with self.fs.open_input_stream(self.path(rel)) as f:
            return f.read()

    def upload_dir(self, local: str | os.PathLike, rel: str) -> None:
        import pyarrow.fs as pafs

        if not self.remote and Path(local).resolve() == Path(self.path(rel)):
            return
        self.fs.create_dir(self.path(rel), recursive=True)
        pafs.copy_files(str(Path(local).resolve()), self.path(rel), source_filesystem=pafs.LocalFileSystem(),
                        destination_filesystem=self.fs)

    def download_dir(self, rel: str, local: str | os.PathLike) -> Path:
        import pyarrow.fs as pafs

        dest = Path(local)
        dest.mkdir(parents=True, exist_ok=True)
        pafs.copy_files(self.path(rel), str(dest.resolve()), source_filesystem=self.fs,
                        destination_filesystem=pafs.LocalFileSystem())
        return dest

    def mirror_run_files(self, run_dir: str | os.PathLike) -> None:
        """Copy the driver's small files to remote storage (nothing to do for a local root:
        the run directory is inside it or is it)."""
        if not self.remote:
            return
        for name in MIRRORED:
            p = Path(run_dir) / name
            if p.is_file():
                try:
                    self.write_bytes(name, p.read_bytes())
                except OSError as e:  # the local copy is the durable one; retry at the next change
                    log.warning("could not mirror %s to %s: %s", name, self.display(), e)


def fetch(uri_or_path: str, dest: str | os.PathLike) -> Path:
    """A local folder holding ``uri_or_path``: the path itself when it is local, else a download
    into ``dest`` (reused when it is already there, complete)."""
    if not is_remote(uri_or_path):
        return Path(uri_or_path)
    dest = Path(dest)
    done = dest / ".trex_fetched"
    if done.is_file() and done.read_text() == uri_or_path:
        return dest
    import pyarrow.fs as pafs

    fs, path = pafs.FileSystem.from_uri(uri_or_path)
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    pafs.copy_files(path, str(dest.resolve()), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
    done.write_text(uri_or_path)
    return dest


def scratch_dir(run_id: str, *parts: str) -> Path:
    """A folder on this machine's own disk for one run's temporary files, under a root only this
    user can enter (see ``scratch_root``)."""
    p = scratch_root().joinpath(run_id, *parts)
    p.mkdir(parents=True, exist_ok=True)
    return p


_private_root: list[Path] = []


def scratch_root() -> Path:
    """``$TREX_RAY_SCRATCH``, else ``<temp>/trex_ray-<uid>``: per user, mode 0700, checked to be a
    real folder this user owns that nobody else can enter. On a shared host another user could
    otherwise create the predictable path first (or link it elsewhere) and read or plant a run's
    downloads; when the check fails, a fresh private folder (``mkdtemp``) is used instead."""
    if os.environ.get("TREX_RAY_SCRATCH"):
        return Path(os.environ["TREX_RAY_SCRATCH"])
    if _private_root:
        return _private_root[0]
    import stat

    uid = os.getuid()
    root = Path(tempfile.gettempdir()) / f"trex_ray-{uid}"
    try:
        root.mkdir(mode=0o700, exist_ok=True)
        st = os.lstat(root)
        if stat.S_ISDIR(st.st_mode) and st.st_uid == uid and not st.st_mode & 0o077:
            return root
        why = "is not a private folder of this user"
    except OSError as e:
        why = f"cannot be used ({e.strerror or e})"
    _private_root.append(Path(tempfile.mkdtemp(prefix=f"trex_ray-{uid}-")))
    log.warning("scratch folder %s %s; using %s instead", root, why, _private_root[0])
    return _private_root[0]


def run_storage_uri(storage: str | None, run_dir: str | os.PathLike) -> str:
    """The storage root of one run: ``<storage>/<run id>`` (query options kept at the end), or the
    run directory itself when no shared storage is configured."""
    run_dir = Path(run_dir)
    if not storage:
        return str(run_dir)
    if not is_remote(storage):
        return str((Path(as_local(storage)).expanduser() / run_dir.name).resolve())
    parts = urlsplit(storage)
    return parts._replace(path=parts.path.rstrip("/") + "/" + run_dir.name).geturl()


def check_storage(storage: str | None) -> None:
    """Fail fast, before Ray starts, on storage this machine cannot write: a probe object is
    written and deleted. ConfigError names the problem (never credentials)."""
    from trex_ray.config import ConfigError

    if not storage:
        return
    scheme = urlsplit(storage).scheme
    if scheme and scheme not in REMOTE_SCHEMES and scheme != "file" and len(scheme) > 1:
        raise ConfigError(f"run.storage {storage!r}: unsupported scheme {scheme}:// (use a path, s3:// or gs://)")
    shown = storage.split("?")[0]  # query options name endpoints; keep them out of messages
    if scheme == "file":
        as_local(storage)  # a file:// URI naming another host: its own one-line error
    try:
        store = RunStorage(storage)
        store.write_bytes(".trex_ray_probe", b"ok")
        store.fs.delete_file(store.path(".trex_ray_probe"))
    except Exception as e:  # noqa: BLE001 - pyarrow raises OSError, ValueError, ArrowInvalid...
        from trex_ray.guard.redact import scrub

        why = scrub((str(e).splitlines() or [type(e).__name__])[0])[:300]  # scrubbed, then cut
        raise ConfigError(f"run.storage {shown} is not writable from this machine: {why}") from None


def fetch_run(uri: str, local_parent: str | os.PathLike) -> Path:
    """Download a run's mirrored driver files from remote storage, for ``--resume`` on a new
    machine; returns the local run directory (``local_parent/<run id>``)."""
    store = RunStorage(uri)
    dest = Path(local_parent).expanduser() / Path(store.base).name
    if (dest / "events.jsonl").is_file():  # this machine has the run already: its ledger is newer
        return dest.resolve()
    if not store.exists("events.jsonl"):  # nothing is written here for what is not a run
        from trex_ray.config import ConfigError

        raise ConfigError(f"--resume {store.display()}: not a TREX-Ray run (no events.jsonl there)")
    dest.mkdir(parents=True, exist_ok=True)
    for name in MIRRORED:
        if store.exists(name):
            (dest / name).write_bytes(store.read_bytes(name))
    return dest.resolve()
