"""End-to-end fixtures: one real `spool serve` per test session, driven by the official SDK.

The server binary comes from `SPOOL_BIN` (default `<repo>/target/debug/spool`). It runs in a
fresh temporary data directory on a free loopback port, with `SPOOL_API_KEY` set to a random
admin key. Its stdout and stderr go to `<tmpdir>/spool.log`; the tail of that file is attached to
the report of every failed test.

Every client built here (SDK or raw httpx) records each response it receives, and a test fails
if any of them was a 204 or a 3xx: the SDK turns a 204 into `{}` (which fails its models) and
does not follow redirects (contract §1.1, §1.3).

Before the server, the session starts `prompt_worker.py` (a worker playing a model) on another
free loopback port and writes `<tmpdir>/spool.toml`, which configures it as the `http` processor
`worker` (`processors.default` stays the built-in `probe`); `spool serve` gets `--config` on that
file. The `worker` fixture yields it (its recorded calls, its secret).

Run: `.venv/bin/pip install -r tests/sdk/requirements.txt && .venv/bin/python -m pytest tests/sdk`.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Awaitable, Callable, Iterator, List, Optional, Tuple

import httpx
import pytest
from videovector import AsyncVideoVector, VideoVector

from prompt_worker import (
    PROCESSOR_CONCURRENCY,
    PROCESSOR_NAME,
    PROCESSOR_RESPONSE_MAX_BYTES,
    PROCESSOR_TIMEOUT_S,
    PromptWorker,
    start_worker,
)

REPO_ROOT = Path(__file__).resolve().parents[2]

DEFAULT_BIN = REPO_ROOT / "target" / "debug" / "spool"

HEALTH_TIMEOUT_S = 60.0
HEALTH_POLL_S = 0.1
SHUTDOWN_GRACE_S = 10.0
CLIENT_TIMEOUT_S = 10.0
LOG_TAIL_BYTES = 8000

# Variables that could point the server somewhere else than the session's own data dir/port.
_SERVER_ENV_DROP = ("SPOOL_DATA_DIR", "SPOOL_LISTEN", "SPOOL_CONFIG", "SPOOL_LOG_URL", "SPOOL_MEDIA_URL", "SPOOL_PARTITIONS")
# SDK variables that would leak ambient credentials or settings into the clients.
_CLIENT_ENV_DROP = (
    "VIDEO_VECTOR_API_KEY",
    "VIDEO_VECTOR_BEARER_TOKEN",
    "VIDEO_VECTOR_AUTH_MODE",
    "VIDEO_VECTOR_TIMEOUT",
    "VIDEO_VECTOR_MAX_RETRY_DELAY",
)


@dataclass(frozen=True)
class SpoolServer:
    root_url: str  # http://127.0.0.1:PORT (healthz, metrics)
    api_base: str  # http://127.0.0.1:PORT/api/v2 (what the SDK is configured with)
    admin_key: str
    data_dir: Path
    log_path: Path
    local_root: Path
    config_path: Optional[Path] = None
    worker: Optional[PromptWorker] = None
    # The other nodes' data directories (SPOOL_TEST_SDK_NODES > 1).
    other_data_dirs: List[Path] = field(default_factory=list)
    # The shared store's folder on s3s-fs (SPOOL_TEST_SDK_MEDIA=s3): its `media/`, `uploads/`
    # and `exports/` are laid out as a data directory's.
    shared_dir: Optional[Path] = None

    @property
    def data_dirs(self) -> List[Path]:
        """Where files may be: every node's data directory (one, unless SPOOL_TEST_SDK_NODES >
        1), and the shared store's folder (SPOOL_TEST_SDK_MEDIA=s3)."""
        return [self.data_dir, *self.other_data_dirs, *([self.shared_dir] if self.shared_dir else [])]

    def media_files(self, pattern: str = "*") -> List[Path]:
        """The stored media files matching `pattern`, wherever media lives."""
        return [p for d in self.data_dirs if (d / "media").exists() for p in (d / "media").rglob(pattern) if p.is_file()]

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


_SERVER: Optional[SpoolServer] = None


def _create_database(admin_url: str, name: str) -> str:
    """A fresh database on the tests' PostgreSQL, by psql; returns its URL."""
    subprocess.run(["psql", admin_url, "-q", "-c", f"CREATE DATABASE {name}"], check=True, capture_output=True)
    return admin_url.rsplit("/", 1)[0] + "/" + name


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _log_tail(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        return "<no server log>"
    return data[-LOG_TAIL_BYTES:].decode(errors="replace")


def _wait_healthy(proc: subprocess.Popen, url: str, log_path: Path) -> None:
    deadline = time.monotonic() + HEALTH_TIMEOUT_S
    last = "no answer yet"
    while time.monotonic() < deadline:
        code = proc.poll()
        if code is not None:
            pytest.fail(
                f"spool exited with code {code} before {url} answered 200.\n"
                f"--- server log tail ---\n{_log_tail(log_path)}",
                pytrace=False,
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
                last = f"HTTP {resp.status}"
        except urllib.error.HTTPError as exc:  # 503 while the log replays
            last = f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            last = repr(exc)
        time.sleep(HEALTH_POLL_S)
    pytest.fail(
        f"{url} did not answer 200 within {HEALTH_TIMEOUT_S:.0f} s (last: {last}).\n"
        f"--- server log tail ---\n{_log_tail(log_path)}",
        pytrace=False,
    )


def _wait_balanced(urls: List[str], total: int) -> None:
    """A partitioned cluster's nodes share its partitions evenly (none moves during the tests:
    each node keeps media in its own data directory)."""
    deadline = time.monotonic() + HEALTH_TIMEOUT_S
    held: List[int] = []
    while time.monotonic() < deadline:
        held = []
        for u in urls:
            try:
                with urllib.request.urlopen(f"{u}/healthz", timeout=2) as resp:
                    held.append(len(json.loads(resp.read())["held"]))
            except (urllib.error.URLError, OSError, KeyError, ValueError):
                held.append(-1)
        if min(held) >= 0 and sum(held) == total and max(held) - min(held) <= 1:
            time.sleep(1.0)  # one more look of every node: nothing is moving
            return
        time.sleep(HEALTH_POLL_S)
    pytest.fail(f"the nodes did not share the {total} partitions evenly: {held}", pytrace=False)


def _write_config(path: Path, worker: PromptWorker) -> None:
    """The server's TOML configuration: the worker as the `http` processor `worker`."""
    path.write_text(
        "[processors]\n"
        'default = "probe"\n'
        "\n"
        f"[processors.{PROCESSOR_NAME}]\n"
        'kind = "http"\n'
        f'url = "{worker.url}"\n'
        f'secret = "{worker.secret}"\n'
        f'timeout = "{PROCESSOR_TIMEOUT_S:g}s"\n'
        f"concurrency = {PROCESSOR_CONCURRENCY}\n"
        f"response_max_bytes = {PROCESSOR_RESPONSE_MAX_BYTES}\n"
    )


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=SHUTDOWN_GRACE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=SHUTDOWN_GRACE_S)


@pytest.fixture(scope="session")
def spool_server() -> Iterator[SpoolServer]:
    """Start `spool serve` once per session; yield where it listens and its admin key."""
    global _SERVER
    binary = Path(os.environ.get("SPOOL_BIN") or DEFAULT_BIN)
    if binary.is_dir():  # a folder holding the binary
        binary = binary / "spool"
    if not binary.is_file() or not os.access(binary, os.X_OK):
        pytest.fail(
            f"spool binary not found or not executable at {binary}; build it "
            "(cargo build -p spool) or set SPOOL_BIN.",
            pytrace=False,
        )

    tmp = Path(tempfile.mkdtemp(prefix="spool-sdk-e2e-"))
    data_dir = tmp / "data"
    data_dir.mkdir()
    log_path = tmp / "spool.log"
    port = _free_port()
    admin_key = "sk_test_" + secrets.token_hex(24)

    local_root = tmp / "local-root"
    local_root.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in _SERVER_ENV_DROP}
    env["SPOOL_API_KEY"] = admin_key
    # The session folder is allowed too: it holds the data directory, which must still be refused
    # as (or around, or inside) a local root (test_sdk_bad_input.py).
    env["SPOOL_LOCAL_ROOTS"] = os.pathsep.join([str(local_root), str(tmp)])
    # S3 connectors without an `endpoint` of their own go to the SigV4-checking s3s-fs.
    if os.environ.get("SPOOL_TEST_S3S_ENDPOINT"):
        env["AWS_ENDPOINT_URL"] = os.environ["SPOOL_TEST_S3S_ENDPOINT"]
    # Azure connectors without an `account_key` of their own (the SDK's create_azure sends only
    # service-principal fields) go to azurite's well-known emulator account.
    if os.environ.get("SPOOL_TEST_AZURITE_URL"):
        env["AZURE_STORAGE_USE_EMULATOR"] = "true"
        env["AZURITE_BLOB_STORAGE_URL"] = os.environ["SPOOL_TEST_AZURITE_URL"]
    env.setdefault("SPOOL_BROWSE_MAX_ENTRIES", "200")
    # test_sdk_media.py sends an upload past this bound.
    env["SPOOL_UPLOAD_MAX_BYTES"] = str(8 * 1024 * 1024)
    # …and one that stops sending for longer than this.
    env["SPOOL_UPLOAD_IDLE_TIMEOUT"] = "2s"
    # Webhook receivers in the tests listen on loopback; retries come after seconds, not hours.
    env["SPOOL_WEBHOOK_ALLOW_HOSTS"] = "127.0.0.1"
    env.setdefault("SPOOL_WEBHOOK_RETRY_SCHEDULE", "0s,1s,1s,1s")
    env.setdefault("SPOOL_WEBHOOK_TIMEOUT", "2s")
    env.setdefault("RUST_BACKTRACE", "1")
    # SPOOL_TEST_SDK_LOG=postgres: the shared server's log is a database of its own on the
    # tests' PostgreSQL (scripts/pg.sh; SPOOL_TEST_PG_URL) instead of redb.
    # SPOOL_TEST_SDK_NODES=3 (with postgres): two more nodes join; the SDK talks to one of them,
    # which forwards every request to the node holding the partition (the first one).
    nodes = 1
    if os.environ.get("SPOOL_TEST_SDK_LOG") == "postgres":
        env["SPOOL_LOG_URL"] = _create_database(os.environ["SPOOL_TEST_PG_URL"], "sdk_" + secrets.token_hex(6))
        nodes = int(os.environ.get("SPOOL_TEST_SDK_NODES") or "1")
        # SPOOL_TEST_SDK_PARTITIONS=N: a catalog and N index partitions (0: one partition);
        # unset: the default (32).
        if os.environ.get("SPOOL_TEST_SDK_PARTITIONS"):
            env["SPOOL_PARTITIONS"] = os.environ["SPOOL_TEST_SDK_PARTITIONS"]

    # SPOOL_TEST_SDK_MEDIA=s3: media, staged uploads and export artifacts live in a bucket of
    # the SigV4-checking s3s-fs (SPOOL_MEDIA_URL), as a cluster's nodes share them.
    shared_dir = None
    if os.environ.get("SPOOL_TEST_SDK_MEDIA") == "s3":
        bucket = "spool-media-" + secrets.token_hex(4)
        (Path(os.environ["SPOOL_TEST_S3S_ROOT"]) / bucket).mkdir(parents=True)
        shared_dir = Path(os.environ["SPOOL_TEST_S3S_ROOT"]) / bucket / "cluster"
        env["SPOOL_MEDIA_URL"] = f"s3://{bucket}/cluster?endpoint={os.environ['SPOOL_TEST_S3S_ENDPOINT']}"
        env["AWS_ACCESS_KEY_ID"] = os.environ["SPOOL_TEST_S3S_ACCESS_KEY"]
        env["AWS_SECRET_ACCESS_KEY"] = os.environ["SPOOL_TEST_S3S_SECRET_KEY"]

    worker = start_worker()
    config_path = tmp / "spool.toml"
    _write_config(config_path, worker)

    log_file = open(log_path, "wb")
    try:
        proc = subprocess.Popen(
            [
                str(binary), "serve",
                "--data-dir", str(data_dir),
                "--listen", f"127.0.0.1:{port}",
                "--config", str(config_path),
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=str(tmp),
        )
    except OSError as exc:
        log_file.close()
        worker.stop()
        pytest.fail(f"could not start {binary}: {exc}", pytrace=False)
    root_url = f"http://127.0.0.1:{port}"
    others: List[subprocess.Popen] = []
    other_dirs: List[Path] = []
    saved_env = {
        k: os.environ.get(k)
        for k in (*_CLIENT_ENV_DROP, "VIDEO_VECTOR_BASE_URL", "VIDEO_VECTOR_MAX_RETRIES", "SPOOL_BIN")
    }
    try:
        _wait_healthy(proc, f"{root_url}/healthz", log_path)
        node_urls = [root_url]
        for n in range(1, nodes):
            node_dir = tmp / f"data-{n}"
            node_dir.mkdir()
            other_dirs.append(node_dir)
            # Every node unwraps the same data keys (SPOOL_MASTER_KEY, or the first node's file).
            if (data_dir / "master.key").exists():
                shutil.copy2(data_dir / "master.key", node_dir / "master.key")
            node_port = _free_port()
            node_log = tmp / f"spool-{n}.log"
            others.append(
                subprocess.Popen(
                    [
                        str(binary), "serve",
                        "--data-dir", str(node_dir),
                        "--listen", f"127.0.0.1:{node_port}",
                        "--config", str(config_path),
                    ],
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=open(node_log, "wb"),
                    stderr=subprocess.STDOUT,
                    cwd=str(tmp),
                )
            )
            _wait_healthy(others[-1], f"http://127.0.0.1:{node_port}/healthz", node_log)
            # The SDK talks to a node that does not hold the partition.
            root_url = f"http://127.0.0.1:{node_port}"
            node_urls.append(root_url)
        partitions = int(os.environ.get("SPOOL_TEST_SDK_PARTITIONS") or "32")
        if partitions > 0 and nodes > 1:
            _wait_balanced(node_urls, partitions + 1)
        server = SpoolServer(
            root_url=root_url,
            api_base=f"{root_url}/api/v2",
            admin_key=admin_key,
            data_dir=data_dir,
            log_path=log_path,
            local_root=local_root,
            config_path=config_path,
            worker=worker,
            other_data_dirs=other_dirs,
            shared_dir=shared_dir,
        )
        # Any client built without explicit settings talks to this server and fails fast.
        for k in _CLIENT_ENV_DROP:
            os.environ.pop(k, None)
        os.environ["VIDEO_VECTOR_BASE_URL"] = server.api_base
        os.environ["VIDEO_VECTOR_MAX_RETRIES"] = "0"
        # Tests that run the CLI read SPOOL_BIN: the binary itself, also when it named a folder.
        if os.environ.get("SPOOL_BIN"):
            os.environ["SPOOL_BIN"] = str(binary)
        _SERVER = server
        yield server
    finally:
        _SERVER = None
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        for other in others:
            _stop(other)
        _stop(proc)
        log_file.close()
        worker.stop()
        if proc.returncode not in (0, None):
            print(f"\nspool exited with code {proc.returncode} after SIGTERM; log kept at {log_path}")
        elif os.environ.get("SPOOL_SDK_KEEP_TMP"):
            print(f"\nspool data and log kept at {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def worker(spool_server: SpoolServer) -> PromptWorker:
    """The prompt worker the session server calls as its `http` processor `worker`."""
    assert spool_server.worker is not None
    return spool_server.worker


Observed = Tuple[str, str, int]


def _recorder(seen: List[Observed]) -> Callable[[httpx.Response], None]:
    def hook(response: httpx.Response) -> None:
        seen.append((response.request.method, str(response.request.url), response.status_code))

    return hook


def _attach_recorder(client: httpx.Client, seen: List[Observed]) -> None:
    hooks = dict(client.event_hooks)
    hooks["response"] = [*hooks.get("response", []), _recorder(seen)]
    client.event_hooks = hooks


def _assert_no_204_or_3xx(seen: List[Observed]) -> None:
    bad = [s for s in seen if s[2] == 204 or 300 <= s[2] < 400]
    assert not bad, f"server answered 204 or 3xx (the SDK cannot handle either): {bad}"


@pytest.fixture
def make_client(spool_server: SpoolServer) -> Iterator[Callable[..., VideoVector]]:
    """Factory for official SDK clients against the session server (no retries, 10 s timeout).

    `make_client()` uses the admin key; `make_client(api_key=...)` or
    `make_client(bearer_token=...)` another credential.
    """
    clients: List[VideoVector] = []
    seen: List[Observed] = []

    def factory(api_key: Optional[str] = None, bearer_token: Optional[str] = None) -> VideoVector:
        if api_key is None and bearer_token is None:
            api_key = spool_server.admin_key
        client = VideoVector(
            api_key=api_key,
            bearer_token=bearer_token,
            base_url=spool_server.api_base,
            timeout=CLIENT_TIMEOUT_S,
            max_retries=0,
        )
        # Observation only: the SDK's own httpx client reports each status it receives.
        _attach_recorder(client._http._client, seen)
        clients.append(client)
        return client

    yield factory
    for c in clients:
        c.close()
    _assert_no_204_or_3xx(seen)


@pytest.fixture
def make_async_client(spool_server: SpoolServer) -> Iterator[Callable[..., Awaitable[AsyncVideoVector]]]:
    """Factory for official async SDK clients against the session server (no retries, 10 s
    timeout), with the same 204/3xx check as `make_client`.

    Use it inside the test's own event loop and close the client there:
    `async with await make_async_client() as ac: ...` (its httpx client is bound to that loop).
    """
    seen: List[Observed] = []

    async def hook(response: httpx.Response) -> None:
        seen.append((response.request.method, str(response.request.url), response.status_code))

    async def factory(api_key: Optional[str] = None, bearer_token: Optional[str] = None) -> AsyncVideoVector:
        if api_key is None and bearer_token is None:
            api_key = spool_server.admin_key
        client = AsyncVideoVector(
            api_key=api_key,
            bearer_token=bearer_token,
            base_url=spool_server.api_base,
            timeout=CLIENT_TIMEOUT_S,
            max_retries=0,
        )
        inner = await client._http._ensure_client()
        hooks = dict(inner.event_hooks)
        hooks["response"] = [*hooks.get("response", []), hook]
        inner.event_hooks = hooks
        return client

    yield factory
    _assert_no_204_or_3xx(seen)


@pytest.fixture
def client(make_client: Callable[..., VideoVector]) -> VideoVector:
    """An official SDK client holding the admin key."""
    return make_client()


@pytest.fixture
def raw(spool_server: SpoolServer) -> Iterator[httpx.Client]:
    """Plain httpx client on the server root, no credentials, redirects not followed."""
    seen: List[Observed] = []
    c = httpx.Client(base_url=spool_server.root_url, timeout=CLIENT_TIMEOUT_S, follow_redirects=False)
    _attach_recorder(c, seen)
    yield c
    c.close()
    _assert_no_204_or_3xx(seen)


@pytest.fixture
def admin_headers(spool_server: SpoolServer) -> dict:
    return {"X-API-Key": spool_server.admin_key, "Accept": "application/json"}


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    rep = yield
    if rep.failed and _SERVER is not None:
        rep.sections.append(("spool server log (tail)", _log_tail(_SERVER.log_path)))
    return rep
