"""The server's translated files, kept for a while for their download (LibreTranslate's
/translate_file answers with a URL, fetched with GET /download_file/NAME).

Each file lives in a directory of the server's own under a name made here, NAME =
32 random hexadecimal digits, a dot and the upload's name reduced to letters, digits, `.`, `_`
and `-`: a name a client sends back is looked up in a table of the names made, so none can
reach outside the directory. Files are kept KEEP_SECONDS, and at most MAX_FILES and MAX_BYTES
together: the oldest go first. The directory goes when the server stops.
"""

from __future__ import annotations

import re
import secrets
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from pathlib import Path

KEEP_SECONDS = 1800.0
MAX_FILES = 200
MAX_BYTES = 500_000_000
NAME = re.compile(r"[0-9a-f]{32}\.[A-Za-z0-9._-]{1,100}")


def safe_name(upload: str) -> str:
    """An upload's file name, without its directories, in characters any filesystem takes."""
    base = re.split(r"[\\/]", upload)[-1]
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", base).strip("._") or "file"
    return cleaned[-100:]


class FileStore:
    def __init__(self, keep_seconds: float = KEEP_SECONDS, max_files: int = MAX_FILES,
                 max_bytes: int = MAX_BYTES, clock=time.monotonic):
        self.directory: Path | None = None  # made with the first file
        self.keep_seconds, self.max_files, self.max_bytes = keep_seconds, max_files, max_bytes
        self.clock = clock
        self.files: OrderedDict[str, tuple[float, int]] = OrderedDict()  # name -> (kept, bytes)
        self.lock = threading.Lock()

    def put(self, upload_name: str, data: bytes) -> str:
        """Keep `data`; its NAME for download."""
        name = f"{secrets.token_hex(16)}.{safe_name(upload_name)}"
        with self.lock:
            if self.directory is None:
                self.directory = Path(tempfile.mkdtemp(prefix="tinytrans-files-"))
        (self.directory / name).write_bytes(data)
        with self.lock:
            self.files[name] = (self.clock(), len(data))
            self._forget_old()
        return name

    def get(self, name: str) -> bytes | None:
        """The file kept under `name`, or None: unknown, expired or not a name made here."""
        if not NAME.fullmatch(name) or self.directory is None:
            return None
        with self.lock:
            self._forget_old()
            if name not in self.files:
                return None
        try:
            return (self.directory / name).read_bytes()
        except OSError:
            return None

    def _forget_old(self) -> None:
        now = self.clock()
        while self.files:
            name, (kept, _) = next(iter(self.files.items()))
            total = sum(size for _, size in self.files.values())
            if now - kept <= self.keep_seconds and len(self.files) <= self.max_files \
                    and total <= self.max_bytes:
                return
            del self.files[name]
            (self.directory / name).unlink(missing_ok=True)

    def close(self) -> None:
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
