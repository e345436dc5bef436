"""Files into a storage: uploads streamed to a temporary file inside it, URL downloads, checksums.

Nothing is held in memory or written outside the storage: an upload's chunks go straight to a
hidden temporary file in the storage's root, which is renamed into its content directory only
once its checksum (when given) matched; a failed transfer leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Callable
from typing import Any

from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import FileUploadHandler, StopFutureHandlers, StopUpload

from vms.exceptions import StorageError
from vms.storage.plugins import DirPlugin
from vms.storage.volnames import FILE_RE, parse_volname

ALGORITHMS = ("md5", "sha1", "sha224", "sha256", "sha384", "sha512")
UPLOAD_CONTENT = ("iso", "vztmpl", "import")
TEMP_PREFIX = ".upload-"
CHUNK = 1024 * 1024


def normalise_filename(filename: str) -> str:
    """Proxmox's ``normalize_content_filename`` (odd characters become ``_``); a path or hidden name is refused."""
    name = str(filename).strip()
    if "/" in name or "\\" in name or name.startswith(".") or not name or len(name) > 255:
        raise ValueError(f"invalid file name '{name[:100]}' (no directories, not hidden)")
    name = re.sub(r"[^a-zA-Z0-9_.-]", "_", name)
    if not FILE_RE.fullmatch(name):
        raise ValueError(f"invalid file name '{name}'")
    return name


def target_volname(content: str, filename: str) -> str:
    """The volume name an uploaded or downloaded file gets; ValueError for a wrong extension."""
    volname = f"{content}/{normalise_filename(filename)}"
    try:
        parse_volname(volname)
    except ValueError:
        raise ValueError("wrong file extension") from None
    return volname


def file_hash(path: str, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def finish(
    plugin: DirPlugin, temp: str, volname: str, checksum: tuple[str, str] | None, log: Callable[[str], None]
) -> str:
    """Verify ``temp``'s checksum and move it to ``volname``'s place; the volume's path. ``temp`` is gone after."""
    try:
        if checksum is not None:
            log("calculating checksum...")
            got = file_hash(temp, checksum[0])
            if got.lower() != checksum[1].lower():
                raise StorageError(f"checksum mismatch: got '{got}' != expect '{checksum[1]}'")
            log("OK, checksum verified")
        volume = parse_volname(volname)
        directory = plugin.content_dir(volume.kind)
        directory.mkdir(parents=True, exist_ok=True)
        target = plugin.path(volume)
        os.chmod(temp, 0o644)
        os.replace(temp, target)
        log(f"target file: {target}")
        log(f"file size is: {os.path.getsize(target)}")
        return target
    finally:
        if os.path.exists(temp):
            os.unlink(temp)


def temp_file(plugin: DirPlugin) -> tuple[int, str]:
    """A new hidden temporary file in the storage's root (same file system as its content)."""
    return tempfile.mkstemp(prefix=TEMP_PREFIX, dir=plugin.root)


class StoredUpload(UploadedFile):
    """The uploaded file, already on disk at ``path`` (never read back into memory here)."""

    def __init__(self, path: str, name: str, size: int) -> None:
        super().__init__(file=None, name=name, size=size)
        self.path = path


class StorageUploadHandler(FileUploadHandler):
    """Writes each chunk to a temporary file in the storage; stops at ``limit`` bytes."""

    def __init__(self, plugin: DirPlugin, limit: int, request: Any = None) -> None:
        super().__init__(request)
        self.plugin = plugin
        self.limit = limit
        self.temp: str | None = None
        self.fd: int | None = None
        self.received = 0
        self.too_large = False

    def new_file(self, *args: Any, **kwargs: Any) -> None:
        super().new_file(*args, **kwargs)
        if self.temp is not None:
            raise StopUpload(connection_reset=True)  # one file per upload
        self.fd, self.temp = temp_file(self.plugin)
        raise StopFutureHandlers()

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes | None:
        assert self.fd is not None
        self.received += len(raw_data)
        if self.received > self.limit:
            self.too_large = True
            self.discard()
            raise StopUpload(connection_reset=True)
        os.write(self.fd, raw_data)
        return None

    def file_complete(self, file_size: int) -> StoredUpload | None:
        if self.fd is None or self.temp is None:
            return None
        os.fsync(self.fd)
        os.close(self.fd)
        self.fd = None
        return StoredUpload(self.temp, str(self.file_name or ""), file_size)

    def discard(self) -> None:
        """Remove the temporary file (an interrupted, refused or failed upload)."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        if self.temp is not None and os.path.exists(self.temp):
            os.unlink(self.temp)

    def upload_interrupted(self) -> None:
        self.discard()


def download(url: str, plugin: DirPlugin, limit: int, log: Callable[[str], None], timeout: float = 30) -> str:
    """``url`` (http or https only, redirects too) streamed to a temporary file in the storage; its path."""
    import requests

    if not re.match(r"https?://", url):
        raise StorageError("only http and https URLs are allowed")
    fd, temp = temp_file(plugin)
    try:
        with requests.get(url, stream=True, timeout=timeout, allow_redirects=True) as response:
            if not response.url.startswith(("http://", "https://")):
                raise StorageError("redirected to a URL that is neither http nor https")
            response.raise_for_status()
            received = 0
            for chunk in response.iter_content(CHUNK):
                received += len(chunk)
                if received > limit:
                    raise StorageError(f"download larger than the limit of {limit} bytes")
                os.write(fd, chunk)
            log(f"downloaded {received} bytes from {url}")
        os.fsync(fd)
        return temp
    except BaseException:
        os.unlink(temp)
        raise
    finally:
        os.close(fd)


def upload_limit(plugin: DirPlugin, configured: int) -> int:
    """The most an upload may write: the configured limit or the space left, whichever is less."""
    return min(configured, plugin.status()["avail"])
