"""Prefect's temporary server for a local `augment run`, started before this process's heavy imports.

With no PREFECT_API_URL, Prefect starts a temporary server (a uvicorn subprocess) at the flow's
first API call, and the run waits for it: about 4 s on 2 cores. Started here instead, in a thread,
right after Prefect's server module is imported, the subprocess boots while this process imports
torch and the stages, checks the config and the run directory, and probes the plan. The flow then
finds it running (Prefect keeps one SubprocessASGIServer per port) and waits for nothing. Prefect's
own rules decide whether there is one: a configured API URL (a server, a worker) or
PREFECT_SERVER_EPHEMERAL_ENABLED=false start nothing here.
"""

from __future__ import annotations

import threading


class EarlyServer:
    """The temporary server being started in the background, or nothing to wait for."""

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

        early.server = SubprocessASGIServer()
        if not early.server.running:
            early._thread = threading.Thread(target=early._start, name="prefect-temporary-server", daemon=True)
            early._thread.start()
        return early

    def _start(self) -> None:
        try:
            self.server.start()
        except Exception as err:  # Prefect tries again at the flow's first call and reports its own error
            self.error = err

    def ready(self) -> None:
        """Wait until the server answers (or its start failed: the flow then starts it as it would have)."""
        if self._thread is not None:
            self._thread.join()

    def discard(self) -> None:
        """No flow will run (a mistake found first): end a server that served nothing at once, not
        after Prefect's graceful stop at exit. It waits for the start under way first (in the CLI the
        mistake is found after the imports, by when the server is up): a kill before the thread's
        Popen would leave the server it then starts running."""
        self.ready()
        proc = getattr(self.server, "server_process", None)
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        if self.server is not None:
            self.server.stop()  # Prefect forgets it: a later flow in this process starts its own
