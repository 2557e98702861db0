"""A real S3 server for the storage-URI tests and the benchmark: moto's standalone server (PyPI
`moto[server]`) as a subprocess on a free loopback port, a bucket the caller creates with boto3,
and a TCP proxy in front of it that can slow the bytes down and cut every connection (an
interrupted download). Nothing here mocks a client: the server under test talks S3 over HTTP."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from tests.helpers import free_port, stop_process

#: Credentials and region for moto (it accepts any); the server under test reads the same variables
#: as KServe's storage initializer does.
S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


class MotoServer:
    """`moto_server` on 127.0.0.1:<free port>, until stop()."""

    def __init__(self, log: Path) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        executable = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or shutil.which("moto_server")
        command = [executable] if executable else [sys.executable, "-m", "moto.server"]
        self._log = log.open("w")
        self.process = subprocess.Popen([*command, "-H", "127.0.0.1", "-p", str(self.port)], stdout=self._log,
                                        stderr=subprocess.STDOUT, env={**os.environ, **S3_ENV})
        deadline = time.monotonic() + 60
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"moto_server exited with {self.process.returncode}: {log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"moto_server did not answer within 60 s: {log.read_text()[-2000:]}") from None
                time.sleep(0.1)

    def client(self, endpoint: str | None = None):
        import boto3

        return boto3.client("s3", endpoint_url=endpoint or self.endpoint, aws_access_key_id=S3_ENV["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=S3_ENV["AWS_SECRET_ACCESS_KEY"], region_name=S3_ENV["AWS_DEFAULT_REGION"])

    def env(self, endpoint: str | None = None) -> dict[str, str]:
        """What a process needs to reach this server as KServe's storage initializer would."""
        return {**S3_ENV, "AWS_ENDPOINT_URL": endpoint or self.endpoint, "S3_VERIFY_SSL": "0"}

    def stop(self) -> None:
        stop_process(self.process, timeout=20)
        self._log.close()


def upload_folder(s3, bucket: str, folder: Path, prefix: str, skip: tuple[str, ...] = ()) -> int:
    """Every file under `folder` as `<prefix>/<relative path>`; returns the bytes uploaded."""
    total = 0
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name not in skip:
            s3.upload_file(str(path), bucket, f"{prefix.rstrip('/')}/{path.relative_to(folder).as_posix()}")
            total += path.stat().st_size
    return total


class ThrottlingProxy:
    """A TCP proxy on a free loopback port to `target_port`, passing at most `bytes_per_second`
    towards the client, counting what it passed; cut() closes every connection and refuses new ones."""

    def __init__(self, target_port: int, bytes_per_second: float) -> None:
        self.target_port = target_port
        self.rate = bytes_per_second
        self.passed = 0
        self.cut_off = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)

    def _accept(self) -> None:
        while not self.cut_off.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.cut_off.is_set():
                client.close()
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self._track(client)
            self._track(upstream)
            threading.Thread(target=self._pipe, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, True), daemon=True).start()

    def _pipe(self, source: socket.socket, target: socket.socket, throttled: bool) -> None:
        started = time.monotonic()
        sent = 0
        try:
            while not self.cut_off.is_set():
                data = source.recv(16384)
                if not data:
                    break
                target.sendall(data)
                if throttled:
                    sent += len(data)
                    with self._lock:
                        self.passed += len(data)
                    ahead = sent / self.rate - (time.monotonic() - started)
                    if ahead > 0:
                        self.cut_off.wait(ahead)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        """The network goes away: every open connection is reset, and nothing answers any more."""
        self.cut_off.set()
        self.listener.close()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # reset
                sock.close()
            except OSError:
                pass
