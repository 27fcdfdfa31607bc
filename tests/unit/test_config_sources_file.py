"""FileFollower with real files and real watchfiles events in a temporary directory."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from onwards.config.model import Snapshot
from onwards.config.parse import content_version, load_config_file
from onwards.config.sources import file as file_source
from onwards.config.sources.file import FileFollower
from tests.support.config_recorder import Recorder

# Generous for a loaded CI machine; a working follower reacts in about 0.1 s.
WAIT = 5.0


def config_bytes(url: str, **target: object) -> bytes:
    return json.dumps({"targets": {"m": {"url": url, **target}}}).encode()


def url_of(snapshot: Snapshot) -> str:
    return snapshot.targets["m"].providers[0].url


Start = Callable[..., FileFollower]


@pytest.fixture
async def follow(tmp_path: Path) -> AsyncIterator[tuple[Recorder, Callable[..., FileFollower]]]:
    """`start(path, **options)` runs a FileFollower for `path` (current version = the file's
    content now) in a task that is cancelled at teardown."""
    recorder = Recorder()
    tasks: list[asyncio.Task[None]] = []

    def start(path: Path, current_version: str | None = None, **options: object) -> FileFollower:
        if current_version is None:
            current_version = load_config_file(path).version
        follower = FileFollower(str(path), current_version, **options)
        tasks.append(asyncio.create_task(follower.run(recorder.apply, recorder.refuse)))
        return follower

    yield recorder, start
    for task in tasks:
        task.cancel()
    for task in tasks:
        with pytest.raises(asyncio.CancelledError):
            await task


async def settle() -> None:
    """Give the watch time to arm (the watcher thread starts asynchronously)."""
    await asyncio.sleep(0.3)


async def test_in_place_write_is_applied(tmp_path: Path, follow) -> None:
    recorder, start = follow
    path = tmp_path / "config.json"
    path.write_bytes(config_bytes("http://a.example"))
    follower = start(path)
    await settle()

    new = config_bytes("http://b.example")
    with path.open("wb") as fh:  # same inode, truncated and rewritten
        fh.write(new)
    await recorder.wait_for(lambda: recorder.applied, "the in-place write to be applied")

    assert recorder.urls == ["http://b.example/"]
    assert recorder.applied[0].version == content_version(new)
    assert recorder.applied[0].origin == str(path)
    assert follower.current_version == content_version(new)
    assert recorder.refused == []


async def test_write_to_temp_then_rename_is_applied(tmp_path: Path, follow) -> None:
    recorder, start = follow
    path = tmp_path / "config.json"
    path.write_bytes(config_bytes("http://a.example"))
    start(path)
    await settle()

    staging = tmp_path / ".config.json.tmp"
    staging.write_bytes(config_bytes("http://b.example"))
    os.replace(staging, path)
    await recorder.wait_for(lambda: recorder.applied, "the renamed file to be applied")
    assert recorder.urls == ["http://b.example/"]

    # And again: the watch survives the inode it started on being replaced.
    staging.write_bytes(config_bytes("http://c.example"))
    os.replace(staging, path)
    await recorder.wait_for(lambda: len(recorder.applied) == 2, "the second rename to be applied")
    assert recorder.urls == ["http://b.example/", "http://c.example/"]


async def test_deleted_file_keeps_serving_and_recreated_file_is_applied(tmp_path: Path, follow) -> None:
    recorder, start = follow
    path = tmp_path / "config.json"
    path.write_bytes(config_bytes("http://a.example"))
    original = content_version(path.read_bytes())
    follower = start(path)
    await settle()

    path.unlink()
    await asyncio.sleep(0.5)
    assert recorder.applied == [] and recorder.refused == []  # a missing file is waited for, not refused
    assert follower.current_version == original

    path.write_bytes(config_bytes("http://b.example"))
    await recorder.wait_for(lambda: recorder.applied, "the re-created file to be applied")
    assert recorder.urls == ["http://b.example/"]


async def test_broken_json_is_refused_once_and_a_fix_is_applied(tmp_path: Path, follow) -> None:
    recorder, start = follow
    path = tmp_path / "config.json"
    path.write_bytes(config_bytes("http://a.example"))
    original = content_version(path.read_bytes())
    follower = start(path)
    await settle()

    path.write_bytes(b'{"targets": {"m": ')
    await recorder.wait_for(lambda: recorder.refused, "the broken file to be refused")
    assert recorder.applied == []
    assert follower.current_version == original
    [message] = recorder.refused
    assert str(path) in message and "invalid JSON" in message
    assert "\n" not in message

    # Re-reading the same broken content (a SIGHUP, an unrelated event) does not refuse again.
    follower.trigger()
    (tmp_path / "unrelated.txt").write_text("x")
    await asyncio.sleep(0.6)
    assert len(recorder.refused) == 1

    path.write_bytes(config_bytes("http://fixed.example"))
    await recorder.wait_for(lambda: recorder.applied, "the fixed file to be applied")
    assert recorder.urls == ["http://fixed.example/"]
    assert len(recorder.refused) == 1


async def test_invalid_field_is_refused_with_its_path(tmp_path: Path, follow) -> None:
    recorder, start = follow
    path = tmp_path / "config.json"
    path.write_bytes(config_bytes("http://a.example"))
    follower = start(path)
    await settle()
    original = follower.current_version

    path.write_bytes(config_bytes("http://a.example", rate_limit={"requests_per_second": 0}))
    await recorder.wait_for(lambda: recorder.refused, "the invalid field to be refused")
    [message] = recorder.refused
    assert str(path) in message
    assert "targets.m.rate_limit.requests_per_second" in message
    assert recorder.applied == []
    assert follower.current_version == original


async def test_rewriting_identical_content_applies_nothing(tmp_path: Path, follow) -> None:
    recorder, start = follow
    path = tmp_path / "config.json"
    raw = config_bytes("http://a.example")
    path.write_bytes(raw)
    start(path)
    await settle()

    path.write_bytes(raw)
    staging = tmp_path / "staging.json"
    staging.write_bytes(raw)
    os.replace(staging, path)
    await asyncio.sleep(0.6)
    assert recorder.applied == [] and recorder.refused == []

    # The follower is alive and watching: a real change still arrives.
    path.write_bytes(config_bytes("http://b.example"))
    await recorder.wait_for(lambda: recorder.applied, "a real change after the identical rewrites")


async def test_slow_writer_is_not_refused_half_way(tmp_path: Path, follow) -> None:
    recorder, start = follow
    path = tmp_path / "config.json"
    path.write_bytes(config_bytes("http://a.example"))
    start(path)
    await settle()

    new = config_bytes("http://b.example")
    with path.open("wb") as fh:
        fh.write(new[:10])
        fh.flush()
        await asyncio.sleep(0.15)  # longer than the event debounce: the half file is seen
        fh.write(new[10:])
    await recorder.wait_for(lambda: recorder.applied, "the completed file to be applied")
    assert recorder.urls == ["http://b.example/"]
    assert recorder.refused == []


async def test_kubernetes_configmap_symlink_swap_is_applied(
    tmp_path: Path, follow, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The layout the kubelet maintains for a mounted ConfigMap:
    #   config.json -> ..data/config.json,  ..data -> ..<timestamp>/
    # An update writes a new timestamped directory and renames a new ..data link over the old.
    # The periodic re-arm check would notice the new target directory on its own; pushing it
    # out of the test's reach makes the test about the directory events.
    monkeypatch.setattr(file_source, "REARM_CHECK_MS", 60_000)
    recorder, start = follow
    first = tmp_path / "..2024_01_01_00_00_00.000000001"
    first.mkdir()
    (first / "config.json").write_bytes(config_bytes("http://a.example"))
    (tmp_path / "..data").symlink_to(first.name)
    path = tmp_path / "config.json"
    path.symlink_to("..data/config.json")
    start(path)
    await settle()

    second = tmp_path / "..2024_01_01_00_01_00.000000002"
    second.mkdir()
    (second / "config.json").write_bytes(config_bytes("http://b.example"))
    (tmp_path / "..data_tmp").symlink_to(second.name)
    os.replace(tmp_path / "..data_tmp", tmp_path / "..data")
    # The old directory stays for now, so only the `..data` rename announces this change.
    await recorder.wait_for(lambda: recorder.applied, "the ConfigMap swap to be applied")
    assert recorder.urls == ["http://b.example/"]
    shutil.rmtree(first)

    # A second swap works too (the watch re-armed on the new target directory).
    third = tmp_path / "..2024_01_01_00_02_00.000000003"
    third.mkdir()
    (third / "config.json").write_bytes(config_bytes("http://c.example"))
    (tmp_path / "..data_tmp").symlink_to(third.name)
    os.replace(tmp_path / "..data_tmp", tmp_path / "..data")
    shutil.rmtree(second)
    await recorder.wait_for(lambda: len(recorder.applied) == 2, "the second ConfigMap swap")
    assert recorder.urls[-1] == "http://c.example/"


async def test_in_place_edit_of_a_symlink_target_elsewhere_is_applied(tmp_path: Path, follow) -> None:
    recorder, start = follow
    elsewhere = tmp_path / "real"
    elsewhere.mkdir()
    target = elsewhere / "actual.json"
    target.write_bytes(config_bytes("http://a.example"))
    links = tmp_path / "links"
    links.mkdir()
    path = links / "config.json"
    path.symlink_to(target)
    start(path)
    await settle()

    target.write_bytes(config_bytes("http://b.example"))  # nothing changes in links/
    await recorder.wait_for(lambda: recorder.applied, "the edit of the link target to be applied")
    assert recorder.urls == ["http://b.example/"]


async def test_a_change_before_run_starts_is_applied_at_start(tmp_path: Path, follow) -> None:
    recorder, start = follow
    path = tmp_path / "config.json"
    path.write_bytes(config_bytes("http://a.example"))
    loaded_version = load_config_file(path).version
    path.write_bytes(config_bytes("http://b.example"))  # edited after the worker loaded it

    start(path, loaded_version, watch=False, recheck_secs=None)
    await recorder.wait_for(lambda: recorder.applied, "the catch-up at start")
    assert recorder.urls == ["http://b.example/"]


async def test_trigger_rereads_without_a_watch(tmp_path: Path, follow) -> None:
    recorder, start = follow
    path = tmp_path / "config.json"
    path.write_bytes(config_bytes("http://a.example"))
    follower = start(path, watch=False, recheck_secs=None)
    await asyncio.sleep(0.1)

    path.write_bytes(config_bytes("http://b.example"))
    await asyncio.sleep(0.5)
    assert recorder.applied == []  # no watch and no re-check: only trigger() reloads

    follower.trigger()
    await recorder.wait_for(lambda: recorder.applied, "trigger() to reload")
    assert recorder.urls == ["http://b.example/"]


async def test_trigger_from_another_thread(tmp_path: Path, follow) -> None:
    recorder, start = follow
    path = tmp_path / "config.json"
    path.write_bytes(config_bytes("http://a.example"))
    follower = start(path, watch=False, recheck_secs=None)
    await asyncio.sleep(0.1)
    path.write_bytes(config_bytes("http://b.example"))

    thread = threading.Thread(target=follower.trigger)
    thread.start()
    thread.join()
    await recorder.wait_for(lambda: recorder.applied, "a trigger() from another thread to reload")


async def test_periodic_recheck_catches_changes_without_events(tmp_path: Path, follow) -> None:
    recorder, start = follow
    path = tmp_path / "config.json"
    path.write_bytes(config_bytes("http://a.example"))
    start(path, watch=False, recheck_secs=0.2)
    await asyncio.sleep(0.1)

    path.write_bytes(config_bytes("http://b.example"))
    await recorder.wait_for(lambda: recorder.applied, "the periodic re-check to reload", timeout=2.0)


async def test_directory_missing_at_start_is_waited_for(tmp_path: Path, follow) -> None:
    recorder, start = follow
    directory = tmp_path / "later"
    path = directory / "config.json"
    start(path, "none-yet")
    await asyncio.sleep(0.3)
    assert recorder.applied == [] and recorder.refused == []

    directory.mkdir()
    path.write_bytes(config_bytes("http://a.example"))
    await recorder.wait_for(lambda: recorder.applied, "the file in the new directory to be applied")
    assert recorder.urls == ["http://a.example/"]


async def test_unreadable_path_is_refused_once(tmp_path: Path, follow) -> None:
    recorder, start = follow
    path = tmp_path / "config.json"
    path.write_bytes(config_bytes("http://a.example"))
    follower = start(path)
    await settle()

    path.unlink()
    path.mkdir()  # a directory where the file should be: waiting does not fix that
    await recorder.wait_for(lambda: recorder.refused, "the unreadable path to be refused")
    follower.trigger()
    await asyncio.sleep(0.3)
    [message] = recorder.refused
    assert str(path) in message and "cannot read" in message

    path.rmdir()
    path.write_bytes(config_bytes("http://b.example"))
    await recorder.wait_for(lambda: recorder.applied, "the file to be applied once it is a file again")


async def test_failing_apply_does_not_stop_the_follower(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_bytes(config_bytes("http://a.example"))
    follower = FileFollower(str(path), load_config_file(path).version)
    calls: list[str] = []

    def apply(snapshot: Snapshot) -> None:
        calls.append(url_of(snapshot))
        if len(calls) == 1:
            raise RuntimeError("boom")

    task = asyncio.create_task(follower.run(apply, lambda message: None))
    try:
        await settle()
        path.write_bytes(config_bytes("http://b.example"))
        for _ in range(250):
            if calls:
                break
            await asyncio.sleep(0.02)
        assert calls == ["http://b.example/"]
        assert follower.current_version != content_version(path.read_bytes())  # not applied

        path.write_bytes(config_bytes("http://c.example"))
        for _ in range(250):
            if len(calls) == 2:
                break
            await asyncio.sleep(0.02)
        assert calls == ["http://b.example/", "http://c.example/"]
        assert follower.current_version == content_version(path.read_bytes())
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_cancel_ends_run_promptly(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_bytes(config_bytes("http://a.example"))
    follower = FileFollower(str(path), load_config_file(path).version)
    task = asyncio.create_task(follower.run(lambda s: None, lambda m: None))
    await settle()
    task.cancel()
    async with asyncio.timeout(2):
        with pytest.raises(asyncio.CancelledError):
            await task
