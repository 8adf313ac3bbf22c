"""Background jobs that ``urbanhub serve`` runs every so often (disposal, rollup compaction)."""

from __future__ import annotations

import logging
import threading

log = logging.getLogger(__name__)


class PeriodicJob:
    """Runs ``run_once`` every ``interval_s`` seconds in a daemon thread of the server.

    The first run comes one interval after start, so a server that restarts often does
    not run the job on every start. ``stop`` asks a run in progress to end after its
    current step (runs watch ``stopping``) and waits for the thread.
    """

    name = "job"

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> object:
        """One run; must log its own failures and return, so the schedule carries on."""
        raise NotImplementedError

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=f"urbanhub-{self.name}",
                                        daemon=True)
        self._thread.start()
        log.info("%s scheduled every %s s", self.name, self.interval_s)

    def stop(self, timeout_s: float = 60.0) -> None:
        self.stopping.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.warning("%s run still busy after %s s; leaving it", self.name, timeout_s)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _loop(self) -> None:
        while not self.stopping.wait(self.interval_s):
            self.run_once()
