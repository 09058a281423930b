"""What the server does beside serving: follow the catalog, and build the rest of the family.

- :class:`CatalogWatcher` looks at ``catalog.json`` every ``catalog_poll_s`` and hands
  each new version that validates to the service, so an engine that a build (or a
  profile run) adds joins the controller's choices with no restart. The catalog is
  written atomically, so a version is read whole or not at all.
- :class:`BackgroundBuild` (``EDGE_BACKGROUND_BUILD``) runs ``edge-service build`` (the
  device's front, engine by engine) and then ``edge-service profile`` (every power mode:
  emulated core sets here; on a Jetson only the current nvpmodel mode, since profiling
  the others would switch the board's mode under the operator) as child processes. The
  server never imports torch: the build does, in its own process. Stopping the server
  stops the child; a later start resumes the build where it stopped.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from edge_service.buildstate import BuildProgress, ProgressFile, read_progress
from edge_service.config import Settings
from edge_service.errors import CatalogError
from edge_service.repository import Catalog, catalog_path, load_catalog

log = logging.getLogger(__name__)


def build_state(
    catalog: Catalog, family_dir: Path, device: str, background: BackgroundBuild | None
) -> dict[str, object]:
    """Where the family's build stands, for /v1/status and the dashboard: complete or
    still growing, the front's origin, the device the catalog was measured on (a foreign
    one, not ``device``, is not trusted), the background build's phase and its progress."""
    build = catalog.build
    built_on = (build.get("device") or {}).get("id")
    progress = read_progress(family_dir)
    return {
        "complete": bool(build.get("complete", True)),
        "front": (build.get("front") or {}).get("mode"),
        "catalog_device": built_on,
        "foreign": built_on != device,
        "background": background.phase if background else None,
        "progress": progress.to_dict() if progress else None,
    }


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


class CatalogWatcher:
    """Calls ``on_catalog`` with every new valid version of the family's catalog."""

    def __init__(
        self, family_dir: Path, on_catalog: Callable[[Catalog], None], period_s: float = 1.0
    ) -> None:
        self._path = catalog_path(family_dir)
        self._dir, self._on, self._period = family_dir, on_catalog, period_s
        self._seen = _stamp(self._path)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="catalog-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def check(self) -> bool:
        """Look once; True when a new catalog was handed over."""
        stamp = _stamp(self._path)
        if stamp is None or stamp == self._seen:
            return False
        try:
            catalog = load_catalog(self._dir)
        except CatalogError as exc:  # e.g. a catalog of a newer schema: keep serving
            log.warning("new catalog not taken: %s", exc.message)
            self._seen = stamp
            return False
        self._seen = stamp
        self._on(catalog)
        return True

    def _run(self) -> None:
        while not self._stop.wait(self._period):
            try:
                self.check()
            except Exception:  # the watcher must outlive one bad reload
                log.exception("reloading the catalog failed; serving the previous one")


CLI = (sys.executable, "-m", "edge_service")


def family_args(settings: Settings) -> list[str]:
    """The options that name the served family to a child ``edge-service`` verb."""
    return ["--family", settings.family, "--engines-dir", str(settings.engines_dir)]


def build_command(settings: Settings, *options: str, exe: tuple[str, ...] = CLI) -> list[str]:
    """``edge-service build`` of the served family, with ``options`` and EDGE_BUILD_ARGS."""
    return [*exe, "build", *family_args(settings), *options, *settings.build_args.split()]


def _lower_priority(pid: int) -> None:
    """Serving comes first: the build runs at a lower CPU priority (nice 10)."""
    try:
        os.setpriority(os.PRIO_PROCESS, pid, 10)
    except OSError as exc:  # it may have exited already
        log.debug("cannot lower the priority of %d: %s", pid, exc)


class BackgroundBuild:
    """``edge-service build`` then ``edge-service profile``, one child at a time."""

    def __init__(
        self,
        settings: Settings,
        profile_modes: str | None = None,
        executable: tuple[str, ...] = CLI,
    ) -> None:
        self._settings, self._modes, self._exe = settings, profile_modes, executable
        self._child: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.phase = "pending"  # pending, build, profile, done, failed, stopped
        self.returncode: int | None = None
        self._thread = threading.Thread(target=self._run, name="background-build", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def commands(self) -> list[tuple[str, list[str]]]:
        """The child processes it runs, in order."""
        profile = [*self._exe, "profile", *family_args(self._settings)]
        profile += ["--runs", "100", "--energy-seconds", "0.5"]
        if self._modes is not None:
            profile += ["--modes", self._modes]
        return [("build", build_command(self._settings, exe=self._exe)), ("profile", profile)]

    def _run(self) -> None:
        for phase, cmd in self.commands():
            if self._stopping.is_set():
                return
            self.phase = phase
            if phase == "profile":
                self._progress(stage="profile", done=0, total=0, message="profiling")
            log.info("background %s: %s", phase, " ".join(cmd[2:]))
            code = self._wait(cmd)
            self.returncode = code
            if self._stopping.is_set():
                self.phase = "stopped"
                return
            if code != 0:  # the progress file first: a reader that sees the phase sees it
                log.error("background %s failed (exit %s); serving what is built", phase, code)
                self._progress(stage="failed", message=f"{phase} exited with {code}")
                self.phase = "failed"
                return
        self._progress(stage="complete", message="", current=None)
        self.phase = "done"

    def _wait(self, cmd: list[str]) -> int:
        env = {**os.environ, "EDGE_BACKGROUND_BUILD": "false"}
        with self._lock:
            if self._stopping.is_set():
                return -1
            self._child = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL)
            _lower_priority(self._child.pid)
        return self._child.wait()

    def _progress(self, **changes: object) -> None:
        default = BuildProgress(stage="profile")
        ProgressFile.resume(self._settings.family_dir, default).update(**changes)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the child (SIGTERM, then SIGKILL after ``timeout``) and the thread."""
        with self._lock:
            self._stopping.set()
            child = self._child
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(timeout)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        if self._thread.is_alive():
            self._thread.join(timeout=timeout)

    def state(self) -> dict[str, object]:
        """For /v1/status: the phase, the child's exit code, the build's own progress."""
        progress = read_progress(self._settings.family_dir)
        return {
            "phase": self.phase,
            "returncode": self.returncode,
            "progress": progress.to_dict() if progress else None,
        }
