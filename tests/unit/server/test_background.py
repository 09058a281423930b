"""The catalog watcher hands over each new valid catalog; the background build runs its
children in order and stops them with the server."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from support import PROFILED

from edge_service.config import Settings
from edge_service.repository import Catalog, save_catalog
from edge_service.server.background import BackgroundBuild, CatalogWatcher


def _write(family: Path, catalog: Catalog) -> None:
    save_catalog(family, catalog)


def test_watcher_hands_over_a_new_catalog_once_when_the_file_changes(tmp_path: Path) -> None:
    _write(tmp_path, PROFILED)
    got: list[Catalog] = []
    watcher = CatalogWatcher(tmp_path, got.append)
    assert not watcher.check()  # the one it started with is not new
    grown = PROFILED.model_copy(update={"build": {"complete": True}})
    time.sleep(0.01)  # a distinct mtime on coarse clocks
    _write(tmp_path, grown)
    assert watcher.check() and got[-1].build == {"complete": True}
    assert not watcher.check() and len(got) == 1


def test_watcher_keeps_the_served_catalog_when_the_new_one_is_invalid(tmp_path: Path) -> None:
    _write(tmp_path, PROFILED)
    got: list[Catalog] = []
    watcher = CatalogWatcher(tmp_path, got.append)
    data = json.loads((tmp_path / "catalog.json").read_text())
    data["schema_version"] = 99
    (tmp_path / "catalog.json").write_text(json.dumps(data))
    assert not watcher.check() and got == []


def test_watcher_does_nothing_when_there_is_no_catalog(tmp_path: Path) -> None:
    watcher = CatalogWatcher(tmp_path, lambda _c: None)
    assert not watcher.check()


def _settings(tmp_path: Path) -> Settings:
    return Settings(engines_dir=tmp_path, family="fashion")


def test_background_build_runs_build_then_profile_with_the_family(tmp_path: Path) -> None:
    names = [phase for phase, _ in BackgroundBuild(_settings(tmp_path)).commands()]
    assert names == ["build", "profile"]
    cmds = [cmd for _, cmd in BackgroundBuild(_settings(tmp_path), profile_modes="2").commands()]
    for cmd in cmds:
        assert cmd[cmd.index("--engines-dir") + 1] == str(tmp_path)
        assert cmd[cmd.index("--family") + 1] == "fashion"
    assert cmds[1][cmds[1].index("--modes") + 1] == "2"  # a Jetson: the current mode only


def _fake(tmp_path: Path, body: str) -> tuple[str, ...]:
    script = tmp_path / "fake_cli.py"
    script.write_text(body)
    return (sys.executable, str(script))


def _stage(job: BackgroundBuild) -> object:
    progress = job.state()["progress"]
    return progress.get("stage") if isinstance(progress, dict) else None


def _wait(pred, timeout: float = 60.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_background_build_is_done_and_complete_when_both_children_succeed(
    tmp_path: Path,
) -> None:
    log = tmp_path / "ran.txt"
    exe = _fake(tmp_path, f"import sys; open({str(log)!r}, 'a').write(sys.argv[1] + '\\n')")
    job = BackgroundBuild(_settings(tmp_path), executable=exe)
    job.start()
    # the job names its phase a moment before it writes the progress file: wait for both
    assert _wait(lambda: job.phase == "done" and _stage(job) == "complete")
    assert log.read_text().split() == ["build", "profile"]
    state = job.state()
    assert state["phase"] == "done" and state["progress"]["stage"] == "complete"  # type: ignore[index]


def test_background_build_stops_at_a_failed_build_and_says_so(tmp_path: Path) -> None:
    exe = _fake(tmp_path, "import sys; sys.exit(3)")
    job = BackgroundBuild(_settings(tmp_path), executable=exe)
    job.start()
    assert _wait(lambda: job.phase == "failed" and _stage(job) == "failed")
    assert job.returncode == 3
    assert job.state()["progress"]["stage"] == "failed"  # type: ignore[index]


def test_background_build_stop_ends_a_running_child(tmp_path: Path) -> None:
    exe = _fake(tmp_path, "import time; time.sleep(600)")
    job = BackgroundBuild(_settings(tmp_path), executable=exe)
    job.start()
    assert _wait(lambda: job._child is not None)
    job.stop(timeout=10)
    assert job.phase == "stopped" or not job._thread.is_alive()
    assert job._child is not None and job._child.poll() is not None
