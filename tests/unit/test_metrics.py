"""Worker-side metrics: names, labels, values as the multiprocess collector sums them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from prometheus_client import values
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.multiprocess import MultiProcessCollector

import onwards.metrics as om
from onwards.metrics import ENV_VAR, Metrics, build_metrics, prepare_multiprocess_dir
from onwards.metrics_exporter import Reaper

CHAT = "/v1/chat/completions"


def collect(path: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample the exporter would serve, keyed by (sample name, sorted labels)."""
    out = {}
    for metric in MultiProcessCollector(None, path=path).collect():
        for s in metric.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


@pytest.fixture
def mp_dir(tmp_path, monkeypatch):
    """A multiprocess dir for this test; prometheus' process-global value class is restored after."""
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    monkeypatch.setattr(values, "ValueClass", values.ValueClass)
    monkeypatch.setattr(om, "_cleaned_pid", None)
    yield str(tmp_path)
    if getattr(values.ValueClass, "_multiprocess", False):
        values.ValueClass.close_all_files()


def test_requests_in_flight_and_duration(mp_dir):
    m = build_metrics(True, "onwards")
    assert m.enabled
    m.request_started()
    m.request_started()
    m.request_started()
    m.request_finished("gpt", CHAT, "POST", 200, 0.2)
    m.request_finished("gpt", CHAT, "POST", 200, 3.0)
    s = collect(mp_dir)
    assert value(s, "onwards_requests_in_flight") == 1
    assert value(s, "onwards_requests_total", target="gpt", route=CHAT, method="POST", status="200") == 2
    assert value(s, "onwards_request_duration_seconds_count", target="gpt", route=CHAT) == 2
    assert value(s, "onwards_request_duration_seconds_sum", target="gpt", route=CHAT) == pytest.approx(3.2)
    assert value(s, "onwards_request_duration_seconds_bucket", target="gpt", route=CHAT, le="0.25") == 1
    assert value(s, "onwards_request_duration_seconds_bucket", target="gpt", route=CHAT, le="5.0") == 2


def test_unbounded_label_inputs_are_clamped(mp_dir):
    m = build_metrics(True, "onwards")
    m.request_finished("unknown", "/v1/other", "BREW", 200, 0.1)
    m.request_finished("unknown", "/v1/other", "brew2", 200, 0.1)
    m.request_finished("unknown", "/v1/other", "GET", 1234, 0.1)
    m.upstream_response("a/0", 42, 0.1)
    s = collect(mp_dir)
    other = {"target": "unknown", "route": "/v1/other"}
    assert value(s, "onwards_requests_total", **other, method="other", status="200") == 2
    assert value(s, "onwards_requests_total", **other, method="GET", status="other") == 1
    assert value(s, "onwards_upstream_requests_total", provider="a/0", status="other") == 1
    methods = {dict(labels)["method"] for name, labels in s if name == "onwards_requests_total"}
    assert methods == {"other", "GET"}


def test_upstream_limits_and_auth(mp_dir):
    m = build_metrics(True, "onwards")
    m.upstream_response("gpt/0", 200, 0.05)
    m.upstream_response("gpt/0", 503, 0.5)
    m.upstream_response("gpt/1", 200, 0.05)
    m.upstream_error("gpt/0", "timeout")
    m.upstream_error("gpt/0", "timeout")
    m.upstream_error("gpt/1", "connect")
    m.limit_rejected("key", "rate")
    m.limit_rejected("provider", "concurrency")
    m.limit_rejected("provider", "concurrency")
    m.limiter_error()
    m.fallback_attempt("gpt")
    m.config_reload("ok")
    m.config_reload("error")
    m.config_reload("error")
    m.streamed("gpt/0", 1000, 7)
    m.streamed("gpt/0", 24, 0)
    m.auth_failure("missing")
    m.auth_failure("invalid")
    m.auth_failure("invalid")
    m.limit_rejected("key", "tokens")
    m.tokens_used("gpt", "gpt/0", "alice", 100, 20)
    m.tokens_used("gpt", "gpt/0", "alice", 5, 0)
    m.tokens_used("gpt", "gpt/1", "none", 0, 7)
    m.tokens_unsettled("gpt")
    s = collect(mp_dir)
    assert value(s, "onwards_tokens_total", target="gpt", provider="gpt/0", key="alice", kind="prompt") == 105
    assert (
        value(s, "onwards_tokens_total", target="gpt", provider="gpt/0", key="alice", kind="completion") == 20
    )
    assert (
        value(s, "onwards_tokens_total", target="gpt", provider="gpt/1", key="none", kind="completion") == 7
    )
    assert value(s, "onwards_token_reservations_unsettled_total", target="gpt") == 1
    assert value(s, "onwards_limit_rejections_total", scope="key", kind="tokens") == 1
    assert value(s, "onwards_upstream_requests_total", provider="gpt/0", status="200") == 1
    assert value(s, "onwards_upstream_requests_total", provider="gpt/0", status="503") == 1
    assert value(s, "onwards_upstream_ttfb_seconds_count", provider="gpt/0") == 2
    assert value(s, "onwards_upstream_ttfb_seconds_count", provider="gpt/1") == 1
    assert value(s, "onwards_upstream_errors_total", provider="gpt/0", kind="timeout") == 2
    assert value(s, "onwards_upstream_errors_total", provider="gpt/1", kind="connect") == 1
    assert value(s, "onwards_limit_rejections_total", scope="key", kind="rate") == 1
    assert value(s, "onwards_limit_rejections_total", scope="provider", kind="concurrency") == 2
    assert value(s, "onwards_limit_rejections_total", scope="target", kind="rate") == 0  # pre-bound
    assert value(s, "onwards_limiter_redis_errors_total") == 1
    assert value(s, "onwards_fallback_attempts_total", target="gpt") == 1
    assert value(s, "onwards_config_reloads_total", result="ok") == 1
    assert value(s, "onwards_config_reloads_total", result="error") == 2
    assert value(s, "onwards_streamed_bytes_total", provider="gpt/0") == 1024
    assert value(s, "onwards_sse_events_total", provider="gpt/0") == 7
    assert value(s, "onwards_auth_failures_total", reason="missing") == 1
    assert value(s, "onwards_auth_failures_total", reason="invalid") == 2


def test_limiter_state_and_config_version(mp_dir):
    m = build_metrics(True, "onwards")
    assert value(collect(mp_dir), "onwards_limiter_circuit_open") == 0
    m.limiter_state("open")
    assert value(collect(mp_dir), "onwards_limiter_circuit_open") == 1
    m.limiter_state("closed")
    assert value(collect(mp_dir), "onwards_limiter_circuit_open") == 0

    m.config_version("v1")
    s = collect(mp_dir)
    assert value(s, "onwards_config_active", version="v1") == 1
    m.config_version("v2")
    m.config_version("v2")
    s = collect(mp_dir)
    assert value(s, "onwards_config_active", version="v1") == 0
    assert value(s, "onwards_config_active", version="v2") == 1


@pytest.mark.parametrize(
    ("call", "args"),
    [
        ("upstream_error", ("gpt/0", "dns")),
        ("limit_rejected", ("user", "rate")),
        ("limit_rejected", ("key", "bytes")),
        ("limiter_state", ("half-open",)),
        ("config_reload", ("maybe",)),
        ("config_version", ("",)),
        ("auth_failure", ("expired",)),
        ("edge_refused", ("slow",)),
        ("streamed", ("gpt/0", -1, 0)),
    ],
)
def test_values_outside_the_closed_sets_are_refused(mp_dir, call, args):
    m = build_metrics(True, "onwards")
    with pytest.raises(ValueError):
        getattr(m, call)(*args)


def test_prefix_applies_to_every_metric(mp_dir):
    m = build_metrics(True, "gw")
    m.request_started()
    m.request_finished("t", CHAT, "POST", 200, 0.1)
    m.upstream_response("t/0", 200, 0.1)
    m.upstream_error("t/0", "reset")
    m.fallback_attempt("t")
    m.config_version("v")
    m.streamed("t/0", 1, 1)
    families = {metric.name for metric in MultiProcessCollector(None, path=mp_dir).collect()}
    assert families == {
        "gw_requests", "gw_request_duration_seconds", "gw_requests_in_flight", "gw_upstream_requests",
        "gw_upstream_ttfb_seconds", "gw_upstream_errors", "gw_limit_rejections", "gw_limiter_redis_errors",
        "gw_limiter_circuit_open", "gw_fallback_attempts", "gw_config_reloads", "gw_config_active",
        "gw_streamed_bytes", "gw_sse_events", "gw_auth_failures",
        "gw_requests_inflight", "gw_retries", "gw_retry_budget_exhausted",
        "gw_requests_cut", "gw_edge_refusals",
        "gw_limiter_misconfigured", "gw_limiter_releases_deferred",
    }  # fmt: skip


@pytest.mark.parametrize("prefix", ["1abc", "on-wards", "a b", None])
def test_bad_prefix_is_refused(mp_dir, prefix):
    with pytest.raises(ValueError, match="prefix"):
        build_metrics(True, prefix)


def test_disabled_metrics_create_nothing(mp_dir, monkeypatch):
    def no_metric(*args, **kwargs):
        raise AssertionError("disabled metrics created a prometheus metric")

    for cls in ("Counter", "Gauge", "Histogram"):
        monkeypatch.setattr(om, cls, no_metric)
    m = build_metrics(False, "onwards")
    assert type(m) is Metrics and not m.enabled
    m.request_started()
    m.request_finished("gpt", CHAT, "POST", 200, 0.1)
    m.upstream_response("gpt/0", 200, 0.1)
    m.upstream_error("gpt/0", "anything")  # no checks either: nothing is recorded
    m.limit_rejected("key", "rate")
    m.limiter_error()
    m.limiter_state("open")
    m.fallback_attempt("gpt")
    m.config_reload("ok")
    m.config_version("v1")
    m.streamed("gpt/0", 10, 1)
    m.auth_failure("missing")
    assert os.listdir(mp_dir) == []


def test_disabled_metrics_need_no_dir(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    build_metrics(False, "onwards").request_started()


def test_enabled_metrics_without_dir_fail_clearly(monkeypatch, tmp_path):
    monkeypatch.delenv(ENV_VAR, raising=False)
    with pytest.raises(RuntimeError, match="prepare_multiprocess_dir"):
        build_metrics(True, "onwards")
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "missing"))
    with pytest.raises(RuntimeError, match="not a directory"):
        build_metrics(True, "onwards")


def test_live_gauges_left_under_a_reused_pid_do_not_count(mp_dir):
    # A dead worker had our pid and 5 requests in flight when it was killed.
    stale = MmapedDict(os.path.join(mp_dir, f"gauge_livesum_{os.getpid()}.db"))
    key = mmap_key("onwards_requests_in_flight", "onwards_requests_in_flight", [], [], "x")
    stale.write_value(key, 5.0, 0.0)
    stale.close()
    m = build_metrics(True, "onwards")
    m.request_started()
    assert value(collect(mp_dir), "onwards_requests_in_flight") == 1


def test_prepare_dir_empties_stale_metric_files(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    d = tmp_path / "m"
    d.mkdir()
    for name in ("counter_123.db", "gauge_livesum_9.db", "histogram_archive.db", "onwards-reap-journal.json"):
        (d / name).write_bytes(b"stale")
    (d / "notes.txt").write_text("keep me")
    assert prepare_multiprocess_dir(str(d)) == str(d)
    assert os.listdir(d) == ["notes.txt"]
    assert os.environ[ENV_VAR] == str(d)


def test_prepare_dir_creates_missing_and_temp_dirs(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    made = prepare_multiprocess_dir(str(tmp_path / "a" / "b"))
    assert os.path.isdir(made) and os.environ[ENV_VAR] == made
    temp = prepare_multiprocess_dir(None)
    try:
        assert os.path.isdir(temp) and os.listdir(temp) == [] and os.environ[ENV_VAR] == temp
    finally:
        os.rmdir(temp)


def test_prepare_dir_refuses_foreign_db_files_and_files(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    (tmp_path / "app.db").write_bytes(b"sqlite")
    with pytest.raises(ValueError, match=r"app\.db"):
        prepare_multiprocess_dir(str(tmp_path))
    assert (tmp_path / "app.db").exists()
    with pytest.raises(ValueError, match="not a directory"):
        prepare_multiprocess_dir(str(tmp_path / "app.db"))


# The parent imports prometheus_client before the env var exists (as the CLI does when it
# imports onwards.metrics), then forks workers that build their metrics after the fork.
FORKING_PARENT = textwrap.dedent(
    """
    import json, os, sys
    import prometheus_client  # picks in-memory values: the env var is not set yet
    from prometheus_client.multiprocess import MultiProcessCollector
    from onwards.metrics import build_metrics, prepare_multiprocess_dir

    d = prepare_multiprocess_dir(sys.argv[1])
    workers = []
    for i in range(3):
        ready_r, ready_w = os.pipe()
        go_r, go_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            m = build_metrics(True, "onwards")
            m.request_started()
            m.request_finished("gpt", "/v1/chat/completions", "POST", 200, 0.1)
            m.request_started()  # still in flight while the parent collects
            m.config_version("v1" if i < 2 else "v2")
            m.limiter_state("open" if i == 0 else "closed")
            os.write(ready_w, b"x")
            os.read(go_r, 1)
            os._exit(0)
        workers.append((pid, ready_r, go_w))
    for _, ready_r, _ in workers:
        os.read(ready_r, 1)
    samples = [
        [s.name, s.labels, s.value]
        for metric in MultiProcessCollector(None, path=d).collect() for s in metric.samples
    ]
    for pid, _, go_w in workers:
        os.write(go_w, b"x")
        os.waitpid(pid, 0)
    print(json.dumps({"samples": samples, "pids": [w[0] for w in workers]}))
    """
)


def test_workers_forked_from_a_parent_are_summed(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != ENV_VAR}
    out = subprocess.run(
        [sys.executable, "-c", FORKING_PARENT, str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    ).stdout
    result = json.loads(out)
    s = {(name, tuple(sorted(labels.items()))): v for name, labels, v in result["samples"]}
    assert value(s, "onwards_requests_in_flight") == 3  # livesum over the three live workers
    assert value(s, "onwards_requests_total", target="gpt", route=CHAT, method="POST", status="200") == 3
    assert value(s, "onwards_config_active", version="v1") == 1
    assert value(s, "onwards_config_active", version="v2") == 1
    assert value(s, "onwards_limiter_circuit_open") == 1  # livemax: one worker is open

    # The workers have exited: their live gauges go, their totals stay.
    Reaper(str(tmp_path)).reap()
    after = collect(str(tmp_path))
    assert value(after, "onwards_requests_in_flight") is None
    assert value(after, "onwards_limiter_circuit_open") is None
    assert value(after, "onwards_config_active", version="v1") is None
    assert value(after, "onwards_requests_total", target="gpt", route=CHAT, method="POST", status="200") == 3
    assert sorted(os.listdir(tmp_path)) == ["counter_archive.db", "histogram_archive.db"]


def test_the_pid_prometheus_asks_for_is_cached_and_follows_forks(mp_dir):
    build_metrics(True, "onwards")
    assert getattr(values.ValueClass, "_onwards_pid_cache", False)
    assert om._current_pid() == os.getpid()
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the child reports what the cache says there, and leaves without cleanup
        os.write(write, f"{om._current_pid()} {os.getpid()}".encode())
        os._exit(0)
    os.close(write)
    _, status = os.waitpid(child, 0)
    cached, real = os.read(read, 100).decode().split()
    os.close(read)
    assert status == 0
    assert cached == real == str(child)
    assert om._current_pid() == os.getpid()


def test_rust_inflight_gauges_and_retry_counters(mp_dir):
    # onwards_requests_inflight and onwards_model_inflight{model} (the Rust onwards' names, read
    # by autoscalers to drain a model) and the retry counters.
    m = build_metrics(True, "onwards")
    m.request_started()
    m.request_started()
    m.model_started("gpt")
    m.model_started("gpt")
    m.model_started("claude")
    m.model_finished("claude")
    m.request_finished("gpt", CHAT, "POST", 200, 0.1)
    m.retry_backoff()
    m.retry_backoff()
    m.retry_budget_exhausted()
    s = collect(mp_dir)
    assert value(s, "onwards_requests_inflight") == 1
    assert value(s, "onwards_model_inflight", model="gpt") == 2
    assert value(s, "onwards_model_inflight", model="claude") == 0
    assert value(s, "onwards_retries_total") == 2
    assert value(s, "onwards_retry_budget_exhausted_total") == 1


def test_limiter_problem_and_deferred_releases(mp_dir):
    m = build_metrics(True, "onwards")
    m.limiter_problem("Redis at redis://h:26379/0 is a Redis Sentinel")
    m.limiter_release_deferred("kept", 5)
    m.limiter_release_deferred("dropped", 2)
    samples = {
        (s.name, s.labels.get("result")): s.value
        for metric in MultiProcessCollector(None, path=mp_dir).collect()
        for s in metric.samples
    }
    assert samples[("onwards_limiter_misconfigured", None)] == 1.0
    assert samples[("onwards_limiter_releases_deferred_total", "kept")] == 5
    assert samples[("onwards_limiter_releases_deferred_total", "dropped")] == 2
    m.limiter_problem(None)
    samples = {
        s.name: s.value
        for metric in MultiProcessCollector(None, path=mp_dir).collect()
        for s in metric.samples
    }
    assert samples["onwards_limiter_misconfigured"] == 0.0
    with pytest.raises(ValueError, match="deferred release result"):
        m.limiter_release_deferred("lost", 1)
