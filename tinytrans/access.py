"""Who may ask the server, and how often: what an operator needs before `serve` leaves 127.0.0.1.

    --api-keys FILE   a line per key: KEY<TAB>REQUESTS_PER_MINUTE ('#' comments and blank lines
                      skipped). Every /translate and /detect request must then carry a listed
                      `api_key` (403 otherwise, as LibreTranslate answers), and gets at most its
                      key's requests a minute (429 beyond).
    --req-limit N     without keys: requests a minute for each client address (0: no limit).

A limit counts the requests of the last 60 seconds (a sliding window), per key or per address
(an IPv6 address by its /64, which one client usually holds whole), in memory: a restart
forgets them, and past MAX_IDENTITIES the longest unused are dropped. Requests refused for their
key count against their address too (FAILED_PER_MINUTE), so keys cannot be guessed at speed.
Keys are never written to the log or into an answer, and an error about the keys file names its
line, not the key on it. A key is at least MIN_KEY_CHARS characters and may not begin with '#'.
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from pathlib import Path

from tinytrans.errors import UserError
from tinytrans.textio import open_binary

WINDOW = 60.0  # seconds a request counts against its limit
MAX_KEYS = 100_000
MIN_KEY_CHARS, MAX_KEY_CHARS = 8, 200
MAX_PER_MINUTE = 1_000_000
FAILED_PER_MINUTE = 20  # requests with a wrong or missing key, per address
MAX_IDENTITIES = 100_000  # keys and addresses counted at once; the longest unused go first


class Refused(Exception):
    """A request the access rules turn away: its HTTP status and one line saying why."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def read_api_keys(path: Path) -> dict[str, int]:
    """KEY -> requests per minute, from a keys file, every line checked."""
    keys: dict[str, int] = {}
    with open_binary(path) as lines:
        for number, raw in enumerate(lines, start=1):
            where = f"{path}:{number}"
            try:  # a byte-order mark, as some editors write, is not part of the first key
                text = raw.decode("utf-8-sig" if number == 1 else "utf-8").strip()
            except UnicodeDecodeError:
                raise UserError(f"{where}: not valid UTF-8") from None
            if not text or text.startswith("#"):
                continue
            key, limit = parse_key_line(text, where)
            if key in keys:
                raise UserError(f"{where}: this key is listed twice")
            keys[key] = limit
            if len(keys) > MAX_KEYS:
                raise UserError(f"{path}: more than {MAX_KEYS:,} keys")
    if not keys:
        raise UserError(f"--api-keys {path}: lists no key; a line per key: KEY<TAB>REQUESTS_PER_MINUTE")
    return keys


def parse_key_line(text: str, where: str) -> tuple[str, int]:
    fields = text.split("\t")
    if len(fields) != 2:
        raise UserError(f"{where}: expected KEY<TAB>REQUESTS_PER_MINUTE")
    key, limit = fields[0].strip(), fields[1].strip()
    if not MIN_KEY_CHARS <= len(key) <= MAX_KEY_CHARS or any(c.isspace() for c in key):
        raise UserError(f"{where}: a key is {MIN_KEY_CHARS} to {MAX_KEY_CHARS} characters "
                        "without spaces")
    if not limit.isascii() or not limit.isdigit() or not 1 <= int(limit) <= MAX_PER_MINUTE:
        raise UserError(f"{where}: requests per minute must be a whole number from 1 to "
                        f"{MAX_PER_MINUTE:,}")
    return key, int(limit)


class Limiter:
    """Admits or refuses each request by its api_key (when keys are required) or its address."""

    def __init__(self, keys: dict[str, int] | None = None, per_address: int = 0,
                 clock: Callable[[], float] = time.monotonic):
        self.keys, self.per_address, self.clock = keys, per_address, clock
        # identity -> times of its recent requests, the longest unused first
        self.recent: OrderedDict[str, deque[float]] = OrderedDict()

    @property
    def keys_required(self) -> bool:
        return self.keys is not None

    def admit(self, api_key: object, address: str) -> None:
        """Count this request, or raise Refused (403: no valid key; 429: over the limit)."""
        if self.keys is not None:
            if not isinstance(api_key, str) or api_key not in self.keys:
                self._count("failed " + client(address), FAILED_PER_MINUTE)
                raise Refused(403, "Invalid API key" if api_key else
                              "api_key: missing; this server requires one")
            self._count("key " + api_key, self.keys[api_key])
        elif self.per_address:
            self._count("address " + client(address), self.per_address)

    def _count(self, identity: str, limit: int) -> None:
        now = self.clock()
        times = self.recent.setdefault(identity, deque())
        self.recent.move_to_end(identity)
        while times and times[0] <= now - WINDOW:
            times.popleft()
        if len(times) >= limit:
            raise Refused(429, f"Slowdown: at most {limit} requests a minute")
        times.append(now)
        while len(self.recent) > MAX_IDENTITIES:
            self.recent.popitem(last=False)


def client(address: str) -> str:
    """Who an address is for a limit: itself, or for IPv6 its /64 network."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    return str(ipaddress.ip_network(f"{ip}/64", strict=False)) if ip.version == 6 else str(ip)
