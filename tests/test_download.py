"""download.fetch against local files and a throw-away HTTP server on 127.0.0.1 (no other address)."""

import gzip
import hashlib
import http.server
import threading

import json

import pytest

from plmscale.data.download import fetch
from plmscale.errors import PlmscaleError

PLAIN = (b">a demo\nMKV\n>b\nACDEFGHIK\n" * 4000)  # ~100 kB: big enough to be cut mid-file


class _Handler(http.server.BaseHTTPRequestHandler):
    """/plain.fa and /data.fa.gz serve files (with Range support); /flaky.fa closes the connection halfway
    through on its first request; anything else is 404."""

    files = {"/page.html": b"<!DOCTYPE html><html><body>Please log in</body></html>\n", "/plain.fa": PLAIN, "/data.fa.gz": gzip.compress(PLAIN, mtime=0), "/flaky.fa": PLAIN}
    flaky_requests = []
    range_requests = []

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        if self.path in ("/cut.fa", "/cut.fa.gz", "/nolength.fa"):
            self._send_without_length()
            return
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404, "Not Found")
            return
        start = 0
        if "Range" in self.headers:
            start = int(self.headers["Range"].split("=")[1].rstrip("-"))
            self.range_requests.append((self.path, start))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        if self.path == "/flaky.fa":
            self.flaky_requests.append(start)
            if len(self.flaky_requests) == 1:
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
        self.wfile.write(body[start:])


    def _send_without_length(self):
        """No Content-Length, then the server closes: the client sees a normal end of the body. The
        /cut.* paths close halfway through, /nolength.fa sends everything."""
        body = gzip.compress(PLAIN, mtime=0) if self.path.endswith(".gz") else PLAIN
        if self.path.startswith("/cut"):
            body = body[: len(body) // 2]
        self.send_response(200)
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        self.close_connection = True


@pytest.fixture
def server():
    _Handler.flaky_requests.clear()
    _Handler.range_requests.clear()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _content(path):
    with gzip.open(path, "rb") as handle:
        return handle.read()


def test_plain_path_and_file_url_are_copied_as_gzip(tmp_path):
    source = tmp_path / "in.fa"
    source.write_bytes(PLAIN)
    fetch(str(source), tmp_path / "a.fasta.gz")
    fetch(source.as_uri(), tmp_path / "b.fasta.gz")
    assert _content(tmp_path / "a.fasta.gz") == PLAIN
    # Reproducible gzip: same input, same bytes.
    assert (tmp_path / "a.fasta.gz").read_bytes() == (tmp_path / "b.fasta.gz").read_bytes()


def test_gzip_input_is_kept_byte_for_byte(tmp_path):
    source = tmp_path / "in.fa.gz"
    source.write_bytes(gzip.compress(PLAIN, mtime=123))
    info = fetch(str(source), tmp_path / "out.fasta.gz")
    assert (tmp_path / "out.fasta.gz").read_bytes() == source.read_bytes()
    assert info["gzip_input"] is True


def test_checksum_ok_and_mismatch(tmp_path):
    source = tmp_path / "in.fa"
    source.write_bytes(PLAIN)
    good = hashlib.sha256(PLAIN).hexdigest()
    fetch(str(source), tmp_path / "ok.fasta.gz", sha256=good, md5=hashlib.md5(PLAIN).hexdigest())
    with pytest.raises(PlmscaleError, match=r"checksum mismatch for the local file .*in.fa: its md5 is [0-9a-f]{32}, "
                                             r"the config's data.sources gives 0{32}") as error:
        fetch(str(source), tmp_path / "bad.fasta.gz", md5="0" * 32)
    assert "removed" not in str(error.value) and "download" not in str(error.value)  # issue 27: it is local
    assert not (tmp_path / "bad.fasta.gz").exists() and source.exists()


def test_missing_local_file(tmp_path):
    with pytest.raises(PlmscaleError, match="does not exist"):
        fetch(str(tmp_path / "nope.fa"), tmp_path / "out.fasta.gz")


def test_a_directory_as_source_says_it_is_a_directory(tmp_path):
    (tmp_path / "proteomes").mkdir()
    with pytest.raises(PlmscaleError, match=r"proteomes \(from url .*\) is a directory; give a FASTA file"):
        fetch(str(tmp_path / "proteomes"), tmp_path / "out.fasta.gz")


def test_http_plain_and_gzip(server, tmp_path):
    fetch(f"{server}/plain.fa", tmp_path / "p.fasta.gz", sha256=hashlib.sha256(PLAIN).hexdigest())
    fetch(f"{server}/data.fa.gz", tmp_path / "g.fasta.gz")
    assert _content(tmp_path / "p.fasta.gz") == PLAIN
    assert _content(tmp_path / "g.fasta.gz") == PLAIN
    assert not list(tmp_path.glob("*.part"))


def test_http_checksum_mismatch_leaves_nothing(server, tmp_path):
    with pytest.raises(PlmscaleError, match="checksum mismatch"):
        fetch(f"{server}/plain.fa", tmp_path / "p.fasta.gz", sha256="f" * 64)
    assert list(tmp_path.iterdir()) == []


def test_404_is_not_retried_and_named(server, tmp_path):
    with pytest.raises(PlmscaleError, match=r"/missing.fa failed: HTTP 404"):
        fetch(f"{server}/missing.fa", tmp_path / "m.fasta.gz", retries=3, backoff_s=0)
    assert list(tmp_path.iterdir()) == []


def test_unreachable_url_names_url_and_what_to_do(tmp_path):
    import socket
    with socket.socket() as probe:  # a port nobody listens on: bind, note, close
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/x.fa"
    with pytest.raises(PlmscaleError, match="network") as caught:
        fetch(url, tmp_path / "x.fasta.gz", retries=1, backoff_s=0, timeout_s=5)
    assert url in str(caught.value) and "local path" in str(caught.value)
    assert not (tmp_path / "x.fasta.gz").exists()


def test_resume_after_dropped_connection(server, tmp_path):
    fetch(f"{server}/flaky.fa", tmp_path / "f.fasta.gz", retries=2, backoff_s=0,
          sha256=hashlib.sha256(PLAIN).hexdigest())
    assert _content(tmp_path / "f.fasta.gz") == PLAIN
    # The second request asked for the rest only.
    assert _Handler.flaky_requests == [0, len(PLAIN) // 2]
    assert not (tmp_path / "f.fasta.gz.part").exists()


def test_dropped_connection_without_retries_keeps_part_for_next_run(server, tmp_path):
    dest = tmp_path / "f.fasta.gz"
    with pytest.raises(PlmscaleError, match="resumes"):
        fetch(f"{server}/flaky.fa", dest, retries=0, backoff_s=0)
    assert not dest.exists()
    assert (tmp_path / "f.fasta.gz.part").stat().st_size == len(PLAIN) // 2
    fetch(f"{server}/flaky.fa", dest, retries=0)
    assert _content(dest) == PLAIN


def test_gzip_cut_mid_body_without_content_length_is_not_a_finished_download(server, tmp_path):
    dest = tmp_path / "c.fasta.gz"
    with pytest.raises(PlmscaleError, match=r"/cut\.fa\.gz.*truncated") as caught:
        fetch(f"{server}/cut.fa.gz", dest, retries=0)
    assert "127.0.0.1" in str(caught.value)  # names the url, not only the internal copy
    assert list(tmp_path.iterdir()) == []  # neither dest nor a .part to resume from


def test_plain_fasta_without_length_says_completeness_is_unverified(server, tmp_path):
    info = fetch(f"{server}/nolength.fa", tmp_path / "n.fasta.gz", retries=0)
    assert info["completeness"]["verified"] is False and "could not be verified" in info["completeness"]["note"]
    checked = fetch(f"{server}/nolength.fa", tmp_path / "s.fasta.gz", retries=0,
                    sha256=hashlib.sha256(PLAIN).hexdigest())
    assert checked["completeness"] == {"verified": True, "checks": ["sha256"], "note": None}
    with pytest.raises(PlmscaleError, match="checksum mismatch"):  # the cut copy is caught by the checksum
        fetch(f"{server}/cut.fa", tmp_path / "c.fasta.gz", retries=0, sha256=hashlib.sha256(PLAIN).hexdigest())
    length = fetch(f"{server}/plain.fa", tmp_path / "p.fasta.gz")["completeness"]
    assert length["verified"] and length["checks"] == ["content-length"]
    gz = fetch(f"{server}/data.fa.gz", tmp_path / "g.fasta.gz")["completeness"]
    assert gz["checks"] == ["content-length", "gzip trailer"]
    json.dumps(info)  # the rule writes it as the download's stats


def test_a_download_that_is_not_fasta_is_refused_and_names_the_url(server, tmp_path):
    dest = tmp_path / "h.fasta.gz"
    with pytest.raises(PlmscaleError, match=r"/page\.html.*HTML") as caught:
        fetch(f"{server}/page.html", dest, retries=0)
    assert "download it again" in str(caught.value)
    assert list(tmp_path.iterdir()) == []  # so "download it again" really downloads again


def test_a_local_file_with_a_fasta_error_is_not_copied(tmp_path):
    source = tmp_path / "src.fa"
    source.write_bytes(b">a\nMKV\n> \nLL\n")
    with pytest.raises(PlmscaleError, match=r"src\.fa, line 3: header without an id"):
        fetch(str(source), tmp_path / "out" / "x.fasta.gz")
    assert not (tmp_path / "out" / "x.fasta.gz").exists()
