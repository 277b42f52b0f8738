"""Prefect's temporary server for a local `augment run`, started before this process's heavy imports.

With no PREFECT_API_URL, Prefect starts a temporary server (a uvicorn subprocess) at the flow's
first API call, and the run waits for it: about 4 s on 2 cores. Started here instead, in a thread,
right after Prefect's server module is imported, the subprocess boots while this process imports
torch and the stages and checks the config and the run directory. The flow then finds it running
(Prefect keeps one SubprocessASGIServer per port) and waits for nothing. Prefect's own rules
decide whether there is one: a configured API URL (a server, a worker) or
PREFECT_SERVER_EPHEMERAL_ENABLED=false start nothing here.
"""

from __future__ import annotations

import contextvars
import signal
import threading
from contextlib import contextmanager
from typing import Iterator


class EarlyServer:
    """The temporary server being started in the background, or nothing to wait for. Only a server
    this object started is ever stopped by it (a test harness's server is left alone)."""

    def __init__(self) -> None:
        self.server = None
        self.error: Exception | None = None
        self._thread: threading.Thread | None = None

    @classmethod
    def start(cls) -> EarlyServer:
        early = cls()
        from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_ENABLED

        if PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
            return early
        # imported by the caller's thread before the server's thread starts: the module imports half of
        # Prefect, and two threads importing one package at once can see each other's half-made modules
        from prefect.server.api.server import SubprocessASGIServer

        server = SubprocessASGIServer()
        if not server.running:
            early.server = server
            # the caller's context: Prefect's settings (temporary_settings, a profile) are context variables
            early._thread = threading.Thread(target=contextvars.copy_context().run, args=(early._start,),
                                             name="prefect-temporary-server", daemon=True)
            early._thread.start()
        return early

    def _start(self) -> None:
        try:
            self.server.start()
        except Exception as err:  # ready() ends what is left of it; the flow's first call starts one anew
            self.error = err

    def ready(self) -> None:
        """Wait until the server answers. If its start failed, end what it left (Prefect leaves a
        timed-out process running), so the flow starts one as it would have and reports its error."""
        if self._thread is None:
            return
        self._thread.join()
        if self.error is not None:
            self._end()

    def discard(self) -> None:
        """No flow will run (a mistake found first, a stop): end a server that served nothing at once,
        not after Prefect's graceful stop at exit. It waits for the start under way first (in the CLI
        a mistake is found after the imports, by when the server is up): a kill before the thread's
        Popen would leave the server it then starts running."""
        if self._thread is None:
            return
        self._thread.join()
        self._end()

    def _end(self) -> None:
        proc = self.server.server_process
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        self.server.stop()  # Prefect forgets it: a later flow in this process starts its own
        self._thread = None


@contextmanager
def until_the_flow(early: EarlyServer) -> Iterator[None]:
    """The time between the server's start and the flow's: nothing is saved there, so a SIGTERM ends
    the process at once as before (exit status 143), and any exit ends the server (a SIGTERM's default
    action would skip the atexit hook that stops it, leaving it running)."""
    main = threading.current_thread() is threading.main_thread()

    def stop(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop) if main and early._thread is not None else None
    try:
        yield
    except BaseException:
        early.discard()
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
