"""Shared fixtures. The integration fixtures start the real server (`python -m predictors`) as a
subprocess on free ports and talk to it on 127.0.0.1."""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import free_port, free_ports, stop_process  # noqa: F401 (free_port: for the tests)

# kserve parses sys.argv when it is imported; pytest's own flags must not reach its parser.
sys.argv = sys.argv[:1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
MODELS_DIR = Path(os.environ.get("PREDICTORS_TEST_MODELS_DIR", ROOT / "models"))
DEMO_MODELS = ("news-topic", "pii-ner", "review-sentiment", "review-sentiment-tfidf", "sentence-embedding")


def http_status(url: str, timeout: float = 2.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            return reply.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (OSError, http.client.HTTPException):  # not listening yet, or something else on the port
        return 0


class RunningServer:
    """`python -m predictors ARGS` on two free ports, its output in `log`."""

    #: Between choosing a free port and the server binding it, another process may take it (the
    #: server then exits with "already in use"): start again on new ports, at most this often.
    PORT_RACE_RETRIES = 3

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.args, self.log, self.env = args, log, {**os.environ, **(env or {})}
        self.retries_left = self.PORT_RACE_RETRIES
        self._spawn()

    def _spawn(self) -> None:
        self.http_port, self.grpc_port = free_ports(2)
        command = [sys.executable, "-m", "predictors", *self.args,
                   "--http_port", str(self.http_port), "--grpc_port", str(self.grpc_port)]
        with self.log.open("w") as handle:
            self.process = subprocess.Popen(command, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT, env=self.env)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def wait_ready(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                output = self.log.read_text()
                if self.process.returncode == 2 and "is already in use" in output and self.retries_left > 0:
                    self.retries_left -= 1
                    self._spawn()
                    continue
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{output[-4000:]}")
            if http_status(f"{self.url}/v2/health/ready") == 200:
                return
            time.sleep(0.25)
        raise TimeoutError(f"server not ready after {timeout}s:\n{self.log.read_text()[-4000:]}")

    def stop(self) -> None:
        stop_process(self.process, timeout=30)


def start_server(args: list[str], log: Path, env: dict[str, str] | None = None) -> RunningServer:
    return RunningServer(args, log, env)


@pytest.fixture(scope="session")
def demo_models() -> Path:
    missing = [m for m in DEMO_MODELS if not (MODELS_DIR / m / "build_info.json").is_file()]
    if missing:
        pytest.fail(f"demo models not built: {missing}; run `make models` (make test does it)")
    return MODELS_DIR


@pytest.fixture(scope="session")
def server(demo_models: Path, tmp_path_factory: pytest.TempPathFactory) -> RunningServer:
    """All demo models on one server, as `make serve` runs them."""
    running = start_server(["--models-dir", str(demo_models)], tmp_path_factory.mktemp("server") / "server.log")
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Everything under tests/integration/ is marked `integration`: `pytest -m "not integration"`
    runs the fast half (no built models, no subprocess)."""
    for item in items:
        if "integration" in item.path.parts:
            item.add_marker(pytest.mark.integration)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """`make test` sets PREDICTORS_NO_SKIPS: there every optional input is provided, so a skip means
    something is missing from the set-up and must fail the run instead of passing silently."""
    if not os.environ.get("PREDICTORS_NO_SKIPS"):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if skipped:
        reporter.write_line(f"PREDICTORS_NO_SKIPS: {len(skipped)} test(s) skipped; make test runs everything", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
