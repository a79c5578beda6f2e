"""What produced a result: code version, packages, tools, machine — so a rerun can be compared."""

import hashlib
import json
import platform
import shutil
import subprocess
import time
from importlib import metadata
from pathlib import Path

_PACKAGES = ("plmscale", "torch", "numpy", "pandas", "scipy", "snakemake", "biopython", "matplotlib")


def cpu_model() -> str:
    """The CPU's model name (as lscpu prints it), or the architecture where /proc/cpuinfo is missing: what
    benchmark records name their machine by."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def sha256_file(path, chunk_size=1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


def config_hash(obj) -> str:
    """sha256 of canonical JSON: the same settings give the same hash whatever the key order."""
    canonical = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def package_versions() -> dict:
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def mmseqs_version(binary="mmseqs"):
    if shutil.which(binary) is None:
        return None
    try:
        out = subprocess.run([binary, "version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def git_commit(repo_dir=None):
    repo_dir = repo_dir or Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "-C", str(repo_dir), "rev-parse", "HEAD"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    dirty = subprocess.run(["git", "-C", str(repo_dir), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, timeout=10).stdout.strip()
    return out.stdout.strip() + ("-dirty" if dirty else "")


def device_info() -> dict:
    try:
        import torch
    except ImportError:
        return {"torch": None}
    info = {"cuda_available": torch.cuda.is_available(), "cpu_threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name(0)
        info["cuda_count"] = torch.cuda.device_count()
    return info


def provenance(extra=None, reproducible_only=False) -> dict:
    """Everything we know about how a result was made.

    reproducible_only drops what differs between identical reruns (time, host), for files whose bytes
    must match across reruns.
    """
    record = {
        "git_commit": git_commit(),
        "versions": package_versions(),
        "mmseqs": mmseqs_version(),
        "python": platform.python_version(),
    }
    if not reproducible_only:
        record.update({"host": platform.node(), "platform": platform.platform(),
                       "device": device_info(), "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    if extra:
        record.update(extra)
    return record
