"""A lease on a shared object store: at most one holder of a name on any number of nodes.

The lease is an object created with a conditional write (S3's If-None-Match: of several
creators exactly one succeeds; the others get FileExistsError) holding its owner and an expiry.
The holder renews it every `ttl / 3` seconds from a thread. A waiter polls; a holder that died
stops renewing, and once its lease has expired a waiter removes it and competes to create it
again. What a crashed holder leaves behind is that one small object, which expires on its own
(`LEASE_SECONDS`, 10 minutes by default: long enough that a slow renewal never loses a live
lease, short enough that a node lost mid-stage delays the rerun by minutes, not hours).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from typing import Any

logger = logging.getLogger(__name__)

LEASES_DIR = ".leases"
LEASE_SECONDS = 600.0  # a dead holder's lease is taken over after this long
LEASE_POLL_SECONDS = 5.0


class RemoteLease:
    """One holder's side of a lease object at `path` on the filesystem `fs` (module docstring)."""

    def __init__(self, fs: Any, path: str, name: str, ttl: float = LEASE_SECONDS) -> None:
        self.fs, self.path = fs, path
        self.name, self.ttl = name, ttl
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def _record(self) -> bytes:
        return json.dumps({"owner": self.owner, "expires": time.time() + self.ttl}).encode()

    def _current(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.fs.cat_file(self.path))
        except FileNotFoundError:
            return None

    def acquire(self) -> None:
        """Wait until this process holds the lease, then renew it in a thread."""
        waited = False
        while True:
            try:
                self.fs.pipe_file(self.path, self._record(), mode="create")
                break
            except FileExistsError:
                held = self._current()
            if held is not None and held.get("expires", 0) < time.time():
                logger.warning("store: lease %s of %s expired; taking it over",
                               self.name, held.get("owner"))  # fmt: skip
                if self._current() == held:
                    self.fs.rm(self.path)
                continue
            if not waited and held is not None:
                logger.info("store: %s holds %s; waiting", held.get("owner"), self.name)
                waited = True
            time.sleep(min(LEASE_POLL_SECONDS, self.ttl / 3))
        self._renewer = threading.Thread(target=self._renew, daemon=True, name=f"lease-{self.name}")
        self._renewer.start()

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                held = self._current()
                if held is None or held.get("owner") != self.owner:
                    logger.error("store: lease %s was taken over by %s", self.name, held)
                    return
                self.fs.pipe_file(self.path, self._record())
            except Exception as error:  # noqa: BLE001  (retried at the next period)
                logger.warning("store: renewing lease %s failed: %s", self.name, error)

    def release(self) -> None:
        """Stop renewing and remove the lease if it is still this holder's."""
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=30)
        try:
            held = self._current()
            if held is not None and held.get("owner") == self.owner:
                self.fs.rm(self.path)
        except Exception as error:  # noqa: BLE001  (it expires on its own)
            logger.warning("store: releasing lease %s failed (it expires): %s", self.name, error)
