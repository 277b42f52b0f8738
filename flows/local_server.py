"""The temporary Prefect server of a local `augment run`, started as the command starts.

With no PREFECT_API_URL, Prefect starts a temporary server (uvicorn serving Prefect's API in a
subprocess) at the flow's first API call, and the run waits for it. To start it, this process
first imports Prefect's server module (about 2 s on 2 cores), then the subprocess imports it
again and boots (about 3 s). Here the subprocess is started as soon as the config has passed its
typed check, without that import in this process: it boots while this process imports torch and
the stages and checks the config and the run directory, and the flow is pointed at it
(PREFECT_API_URL, for the flow only). The subprocess runs this module: Prefect's own app factory
and uvicorn, the way Prefect runs them (its environment, its settings, the UI off), with the
cyclic collector off during its imports (their collections cost about 0.8 s of its boot).

Prefect's own rules decide whether there is one: a configured API URL (a server, a worker, a test
harness) or PREFECT_SERVER_EPHEMERAL_ENABLED=false start nothing here. One server serves every
flow this process runs; it is stopped at exit, or at once when no flow will run (a mistake found
first). Should it fail to start, it is ended and the flow starts Prefect's own, which reports
its error as it would have.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from typing import Iterator

class EarlyServer:
    """The temporary server this process started for its flows, or nothing (None: Prefect's rules
    start none, or it failed and the flow starts Prefect's own)."""

    _running: EarlyServer | None = None  # the one serving this process's flows (a later run reuses it)

    def __init__(self) -> None:
        self.process: subprocess.Popen | None = None
        self.port: int | None = None
        self.error: Exception | None = None
        self.up = False
        self._env: dict[str, str] = {}

    @property
    def api_url(self) -> str | None:
        return f"http://127.0.0.1:{self.port}/api" if self.port is not None else None

    @classmethod
    def start(cls) -> EarlyServer:
        """The server being started (or the one already serving this process), or nothing to wait for."""
        from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_ENABLED, get_current_settings

        if PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
            return cls()
        if cls._running is not None and cls._running.process.poll() is None:
            return cls._running
        early = cls()
        env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1",
               **get_current_settings().to_environment_variables(exclude_unset=True)}  # Prefect's own order
        try:
            early._launch(env)
        except OSError as err:  # no process to start: the flow starts Prefect's own server
            early.port, early.error = None, err
            return early
        EarlyServer._running = early
        atexit.register(early.stop)
        return early

    def _launch(self, env: dict[str, str]) -> None:
        """The server process, on a port bound here and handed over (no other process can take it in between).
        It runs this file by path with -P (a `flows` package in the current folder cannot shadow it), in a
        session of its own (a Ctrl-C in the terminal is this process's to handle, not the server's), and
        ends itself should this process end without stopping it (a SIGKILL)."""
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
            self.process = subprocess.Popen(
                [sys.executable, "-P", os.path.abspath(__file__), str(sock.fileno()), str(os.getpid())],
                env=env, pass_fds=(sock.fileno(),), start_new_session=True)

    def ready(self) -> None:
        """Wait until the server answers (Prefect's startup timeout: PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS).
        If it fails, end it: the flow then starts Prefect's own server, which reports its error."""
        if self.process is None or (self.up and self.process.poll() is None):
            return
        from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS

        self.up = False
        deadline = time.monotonic() + PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value()
        while time.monotonic() < deadline:
            status = self.process.poll()
            if status is not None:
                self.error = RuntimeError(f"the temporary Prefect server exited with status {status}")
                break
            try:
                with urllib.request.urlopen(f"{self.api_url}/health", timeout=5) as reply:
                    if reply.status == 200:
                        self.up = True
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        self.error = self.error or TimeoutError("the temporary Prefect server did not answer in time")
        self.stop()

    @contextmanager
    def for_the_flow(self) -> Iterator[None]:
        """Prefect's settings inside: the flow's API is this server (no UI link: it serves none)."""
        if not self.up:
            yield
            return
        from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, temporary_settings

        with temporary_settings(updates={PREFECT_API_URL: self.api_url, PREFECT_UI_URL: ""}):
            yield

    def discard(self) -> None:
        """No flow will run (a mistake found first, a stop): end the server now, not at exit."""
        self.stop()

    def stop(self) -> None:
        """End the server (at exit: it served every flow of this process). Nothing it holds is needed:
        the flows' logs and events were sent before (Prefect drains them as its flows end)."""
        proc, self.process, self.up = self.process, None, False
        if EarlyServer._running is self:
            EarlyServer._running = None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextmanager
def until_the_flow(early: EarlyServer) -> Iterator[None]:
    """The time between the server's start and the flow's: nothing is saved there, so a SIGTERM ends
    the process at once as before (exit status 143), and any exit ends the server (a SIGTERM's default
    action would skip the atexit hook that stops it, leaving it running)."""
    main = threading.current_thread() is threading.main_thread()

    def stop(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop) if main and early.process is not None else None
    try:
        yield
    except BaseException:
        early.discard()
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _serve(fd: int, parent: int) -> None:
    """The server process: Prefect's app (its factory, as `uvicorn --factory` calls it: ephemeral, the UI
    off, from this environment) served by uvicorn on the socket `fd` (bound by the parent, on 127.0.0.1),
    as Prefect's temporary server is. Ends when process `parent` does."""
    import gc

    gc.disable()  # the imports' objects live as long as the server: frozen, no collection walks them
    try:
        import uvicorn
        from prefect.server.api.server import create_app

        app = create_app()
    finally:
        gc.freeze()
        gc.enable()

    def watch() -> None:  # the parent gone without stopping us (killed): stop as if told to
        while os.getppid() == parent:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
    server = uvicorn.Server(uvicorn.Config(app, log_level="error", lifespan="on"))
    with contextlib.suppress(KeyboardInterrupt):
        server.run(sockets=[socket.socket(fileno=fd)])


if __name__ == "__main__":
    _serve(int(sys.argv[1]), int(sys.argv[2]))
