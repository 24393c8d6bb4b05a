"""``qpsam serve`` as users start it: a subprocess with TLS, a token from the environment and two workers.

No model is loaded here (version, health, weights and errors only), so the test stays light.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from qpsam.engines.remote import SamapiClient
from qpsam.errors import ServerError

REPO = Path(__file__).resolve().parents[1]
TOKEN = "env-token-123"
_PROCESS: dict[str, object] = {}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a self-signed certificate for the TLS test")
    folder = tmp_path_factory.mktemp("tls")
    key, crt = folder / "key.pem", folder / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(crt)],
        check=True, capture_output=True,
    )
    return crt, key


@pytest.fixture(scope="module")
def served(cert: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    crt, key = cert
    port = _free_port()
    env = dict(os.environ, QPSAM_SERVER_TOKEN=TOKEN, QPSAM_HOME=str(tmp_path_factory.mktemp("home")))
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, "-m", "qpsam.cli", "serve", "--port", str(port), "--workers", "2", "--device", "cpu",
           "--ssl-certfile", str(crt), "--ssl-keyfile", str(key), "--log-level", "info"]
    log = tmp_path_factory.mktemp("log") / "serve.log"
    out = open(log, "w")
    proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
    _PROCESS["proc"], _PROCESS["log"] = proc, log
    url = f"https://127.0.0.1:{port}/sam/"
    try:
        for _ in range(300):
            if proc.poll() is not None:
                pytest.fail(f"qpsam serve exited with {proc.returncode}: {log.read_text()}")
            try:
                if httpx.get(url + "version/", verify=False, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            pytest.fail("qpsam serve did not answer within 30 s")
        yield url
    finally:
        _stop(proc)
        out.close()


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_tls_with_the_certificate(served: str, cert: tuple[Path, Path]) -> None:
    crt, _ = cert
    with SamapiClient(served, token=TOKEN, verify=str(crt)) as client:
        assert client.version().startswith("0.7.1+qpsam.")
        assert client.info()["token_required"] is True
        names = [w["name"] for w in client.list_weights("vit_t")]
        assert names[0] == "default"
        assert client.progress() == {"message": None, "percent": -1}


def test_tls_is_verified_by_default(served: str) -> None:
    with SamapiClient(served, token=TOKEN, retries=0) as client:
        with pytest.raises(ServerError, match="(?i)certificate"):
            client.version()
    with SamapiClient(served, token=TOKEN, verify=False) as client:  # the extension's default ("Verify SSL" off)
        assert client.list_weights("vit_b")[0]["name"] == "default"


def test_token_from_the_environment_is_required(served: str) -> None:
    assert httpx.get(served + "weights/", verify=False).status_code == 401
    assert httpx.get(served.replace("/sam/", f"/t/{TOKEN}/sam/") + "weights/?type=vit_t", verify=False).status_code == 200
    with SamapiClient(served, token="wrong", verify=False) as client:
        with pytest.raises(ServerError, match=r"401"):
            client.list_weights()


def test_both_workers_answer(served: str) -> None:
    # Each request opens a new connection (as the extension does); with two workers both serve.
    for _ in range(6):
        r = httpx.get(served + "health/", verify=False)
        assert r.status_code == 200 and r.json()["server"] == "qpsam"


def test_serve_refuses_half_a_tls_setup(cert: tuple[Path, Path]) -> None:
    from click.testing import CliRunner

    from qpsam.cli import cli

    result = CliRunner().invoke(cli, ["serve", "--ssl-certfile", str(cert[0])])
    assert result.exit_code == 2 and "go together" in result.output
    help_text = CliRunner().invoke(cli, ["serve", "--help"]).output
    for option in ("--host", "--port", "--device", "--token", "--workers", "--ssl-certfile", "--ssl-keyfile"):
        assert option in help_text


def test_no_model_is_loaded_at_start(tmp_path: Path) -> None:
    # samapi loaded every default checkpoint onto the device at start-up; qpsam loads a model on first use.
    from fastapi.testclient import TestClient

    from qpsam.server import Settings, create_app
    from qpsam.server.state import app_state

    built: list[str] = []
    app = create_app(Settings(home=tmp_path), engine_factory=lambda t, *a: built.append(t))
    with TestClient(app) as client:
        assert client.get("/sam/version/").status_code == 200
        assert client.get("/sam/weights/").status_code == 200
    assert built == [] and app_state(app).host.loads == 0


def test_access_log_hides_the_token_and_polling(served: str) -> None:
    # Runs last in this module: it stops the server to read its whole log.
    prefixed = served.replace("/sam/", f"/t/{TOKEN}/sam/")
    assert httpx.get(prefixed + "weights/?type=vit_h", verify=False).status_code == 200
    for _ in range(3):
        assert httpx.get(prefixed + "progress/", verify=False).status_code == 200
    proc, log = _PROCESS["proc"], _PROCESS["log"]
    _stop(proc)  # type: ignore[arg-type]
    text = Path(str(log)).read_text()
    assert "/sam/weights/?type=vit_h" in text  # requests are logged...
    assert TOKEN not in text  # ...without the token given in the URL
    assert "/sam/progress/" not in text  # polling is not logged
