"""Fetch one source file (http, https, ftp, file:// or a local path) into a gzip file, safely.

- The bytes as served go to `<dest>.part`; an interrupted HTTP download resumes from there with a Range
  request, so a 50 GB file dropped at 90% does not start over.
- Checksums (md5 / sha256 from the config) are computed over the bytes as served, before any conversion.
- The result is always gzip: gzip input is kept byte for byte, plain input is compressed reproducibly.
- `dest` appears only when everything succeeded (rename), so Snakemake never sees a half file as done.
  That includes validation: the whole file is read as FASTA (which also checks a gzip file's trailer, its
  CRC and length) before it counts as downloaded; an error names the url, and the next run fetches again.
- Completeness: a download is verified complete by Content-Length (HTTP; FTP where the server reports a
  size), by the gzip trailer, or by a configured checksum. A plain FASTA served with none of these cannot
  be told from one cut short by a closed connection: the returned info (the rule's stats file) says so.
"""

import hashlib
import http.client
import logging
import shutil
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from plmscale.data.atomic import atomic_path, remove_stale_temporaries
from plmscale.data.fasta import read_fasta_batches
from plmscale.data.gzio import GZIP_MAGIC, open_write
from plmscale.errors import PlmscaleError

log = logging.getLogger(__name__)

NETWORK_SCHEMES = ("http", "https", "ftp")
CHUNK = 1 << 20
PROGRESS_EVERY_BYTES = 256 << 20
USER_AGENT = "plmscale-download/1"
# Failures worth another attempt: the network, not the request.
_TRANSIENT = (urllib.error.URLError, http.client.HTTPException, ConnectionError, socket.timeout, TimeoutError)


class _PermanentHTTPError(Exception):
    def __init__(self, code, reason):
        super().__init__(code, reason)
        self.code, self.reason = code, reason


def is_network_url(url: str) -> bool:
    return urllib.parse.urlparse(url).scheme.lower() in NETWORK_SCHEMES


def local_path(url: str):
    """The filesystem path of a file:// url or a plain path; None for network urls."""
    parsed = urllib.parse.urlparse(url)
    scheme = parsed.scheme.lower()
    if scheme == "file":
        return Path(urllib.request.url2pathname(parsed.path))
    if scheme in NETWORK_SCHEMES:
        return None
    if scheme and len(scheme) > 1:
        raise PlmscaleError(f"source url {url!r}: unsupported scheme {scheme!r}; use http(s)://, ftp://, "
                            "file:// or a plain path")
    return Path(url)


def fetch(url, dest, md5=None, sha256=None, timeout_s=60.0, retries=4, backoff_s=2.0) -> dict:
    """Download or copy `url` to `dest` (gzip) and validate it as FASTA. Returns
    {url, gzip_input, md5, sha256, size, completeness}."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(dest.parent)
    part = dest.with_name(dest.name + ".part")
    source = local_path(url)
    if source is None:
        length_checked = _download(url, part, timeout_s, retries, backoff_s)
        served = part
    else:
        if source.is_dir():
            raise PlmscaleError(f"source file {source} (from url {url!r}) is a directory; give a FASTA file "
                                "(plain or gzip) as the url of this source in the config's data.sources")
        if not source.is_file():
            raise PlmscaleError(f"source file {source} (from url {url!r}) does not exist; fix data.sources "
                                "in the config")
        served, length_checked = source, None

    digests = _checksums(served)
    gzip_input = _has_gzip_magic(served)
    try:
        _verify(url, served, digests, md5, sha256, local=source is not None)
        _validate_fasta(url, served, dest.parent)
    except PlmscaleError:
        if served == part:
            part.unlink()  # bad bytes must not be resumed from: the next run downloads afresh
        raise
    with atomic_path(dest) as tmp:
        if gzip_input:
            shutil.copyfile(served, tmp)
        else:
            _compress(served, tmp)
    if served == part:
        part.unlink()
    completeness = _completeness(source is not None, length_checked, gzip_input, md5, sha256)
    if not completeness["verified"]:
        log.warning("%s: %s", url, completeness["note"])
    info = {"url": url, "gzip_input": gzip_input, **digests, "completeness": completeness}
    log.info("%s -> %s (%d bytes as served, sha256 %s)", url, dest, digests["size"], digests["sha256"])
    return info


def _validate_fasta(url, path, spill_dir) -> None:
    """Read the whole file as FASTA (gzip trailer included); an error names the url, not the copy.
    Duplicate ids are left to the clean step: a fresh download would not change them."""
    try:
        for batch in read_fasta_batches(path, check_duplicate_ids=False, spill_dir=spill_dir):
            batch.check_ascii_ids()
    except PlmscaleError as error:
        message = str(error)
        if str(path) != str(url):
            message = message.replace(str(path), f"{url} (downloaded to {path}, now removed)", 1)
        raise PlmscaleError(message) from None


def _completeness(local, length_checked, gzip_input, md5, sha256) -> dict:
    """How (and whether) we know the bytes we hold are the whole file."""
    checks = (["local file"] if local else []) + (["content-length"] if length_checked else [])
    checks += (["gzip trailer"] if gzip_input else []) + [name for name, v in (("md5", md5), ("sha256", sha256)) if v]
    note = None if checks else (
        "completeness could not be verified: a plain FASTA served without Content-Length and without a "
        "checksum looks the same as one cut short by a closed connection — give md5 or sha256 for this "
        "source in data.sources, or use a gzip file")
    return {"verified": bool(checks), "checks": checks, "note": note}


def _has_gzip_magic(path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(2) == GZIP_MAGIC


def _compress(path, out_path) -> None:
    with open(path, "rb") as plain, open_write(out_path) as zipped:
        while block := plain.read(CHUNK):
            zipped.write(block)


def _checksums(path) -> dict:
    md5, sha = hashlib.md5(), hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK):
            md5.update(block)
            sha.update(block)
            size += len(block)
    return {"md5": md5.hexdigest(), "sha256": sha.hexdigest(), "size": size}


def _verify(url, path, digests, md5, sha256, local: bool = False) -> None:
    for name, expected in (("md5", md5), ("sha256", sha256)):
        if expected and expected.lower() != digests[name]:
            if local:
                raise PlmscaleError(
                    f"checksum mismatch for the local file {path}: its {name} is {digests[name]}, the config's "
                    f"data.sources gives {expected.lower()} for {url}. Either the file is not the one the "
                    f"config means (replace it with the right file), or the file changed on purpose (put its "
                    f"{name} into the config).")
            raise PlmscaleError(
                f"checksum mismatch for {url} ({path}): expected {name} {expected.lower()}, got "
                f"{digests[name]}. The download was removed; run again to download it afresh. If the file "
                f"changed upstream on purpose, update {name} of this source in the config's data.sources.")


def _download(url, part: Path, timeout_s, retries, backoff_s) -> None:
    """Fetch url into part (resuming); True when the server's length confirmed that all bytes came."""
    attempts = retries + 1
    for attempt in range(1, attempts + 1):
        try:
            return _download_once(url, part, timeout_s)
        except _PermanentHTTPError as error:
            if part.exists():
                part.unlink()
            hint = ("the file is not there: check the url in data.sources" if error.code in (404, 410)
                    else "the server refused the request: check the url and any access rights")
            raise PlmscaleError(f"download of {url} failed: HTTP {error.code} {error.reason}; {hint}") from None
        except _TRANSIENT as error:
            kept = part.stat().st_size if part.exists() else 0
            if attempt == attempts:
                raise PlmscaleError(
                    f"could not download {url} after {attempts} attempt(s): {_describe(error)}. Check the "
                    "network connection and any proxy settings (https_proxy/ftp_proxy), or download the file "
                    "yourself and give its local path as the source url. "
                    + (f"{kept} bytes are kept in {part}; the next run resumes from there." if kept else "")
                ) from None
            wait = backoff_s * 2 ** (attempt - 1)
            log.warning("download of %s failed (%s), attempt %d/%d; %d bytes kept; retrying in %.1f s",
                        url, _describe(error), attempt, attempts, kept, wait)
            time.sleep(wait)


def _describe(error) -> str:
    if isinstance(error, urllib.error.URLError) and not isinstance(error, urllib.error.HTTPError):
        return f"{type(error.reason).__name__}: {error.reason}"
    return f"{type(error).__name__}: {error}"


def _download_once(url, part: Path, timeout_s) -> bool:
    """One attempt: resume from part's size when the server supports Range (HTTP 206), else restart.
    Returns whether the server announced a length (HTTP Content-Length; urllib's FTP handler reports the
    file size the same way when the server gives one) that the bytes received were checked against."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    resumable = have > 0 and urllib.parse.urlparse(url).scheme.lower() in ("http", "https")
    if resumable:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout_s)
    except urllib.error.HTTPError as error:
        if error.code == 416 and have:
            part.unlink()  # our partial file does not fit the server's file: start over next attempt
            raise ConnectionError("server rejected the resume range; restarting") from None
        if error.code in (408, 429) or error.code >= 500:
            raise
        raise _PermanentHTTPError(error.code, error.reason) from None
    with response:
        status = getattr(response, "status", None)
        if resumable and status == 206:
            mode, done = "ab", have
            log.info("resuming %s at byte %d", url, have)
        else:
            mode, done = "wb", 0
        length = response.headers.get("Content-Length")
        total = done + int(length) if length is not None else None
        next_report = done + PROGRESS_EVERY_BYTES
        started = time.monotonic()
        with open(part, mode) as out:
            while block := response.read(CHUNK):
                out.write(block)
                done += len(block)
                if done >= next_report:
                    rate = (done - have) / max(time.monotonic() - started, 1e-9) / 1e6
                    of_total = f" of {total / 1e6:.0f} MB" if total else ""
                    log.info("%s: %.0f MB%s (%.1f MB/s)", url, done / 1e6, of_total, rate)
                    next_report += PROGRESS_EVERY_BYTES
        if total is not None and done < total:
            raise http.client.IncompleteRead(b"", total - done)
        return total is not None


def fetch_to(url, dest, settings: dict, md5=None, sha256=None) -> dict:
    """fetch() with the config's data.download settings (timeout_s, retries, backoff_s)."""
    return fetch(url, dest, md5=md5, sha256=sha256, timeout_s=settings.get("timeout_s", 60),
                 retries=settings.get("retries", 4), backoff_s=settings.get("backoff_s", 2.0))
