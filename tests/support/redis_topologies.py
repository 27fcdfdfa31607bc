"""Throw-away Redis topologies on loopback for the limiter's fault tests: Sentinel and Cluster.

Each helper starts private processes on free ports in a temporary directory and stops every one
of them on exit. Waits are bounded and poll the servers' own state (INFO, SENTINEL, CLUSTER INFO),
never a fixed sleep.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from tests.support.processes import ManagedProcess, free_port, wait_until
from tests.support.redis_server import RedisServer

SERVICE = "onwardsmaster"


def _client(port: int) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=2, socket_connect_timeout=2)


def _try(port: int, *command: str) -> object:
    try:
        with _client(port) as client:
            return client.execute_command(*command)
    except redis.RedisError:
        return None


def _bytes(reply: object) -> bytes:
    if isinstance(reply, dict):
        return "\n".join(f"{k}:{v}" for k, v in reply.items()).encode()
    return reply if isinstance(reply, bytes) else b""


class SentinelProcess(ManagedProcess):
    label = "redis-sentinel"
    startup_timeout = 10.0

    def __init__(self, port: int, config: Path) -> None:
        binary = shutil.which("redis-sentinel")
        if binary is None:
            pytest.skip("redis-sentinel is not installed")
        self.port = port
        super().__init__([binary, str(config)])

    def ready(self) -> bool:
        return _try(self.port, "PING") is not None


@dataclass
class SentinelSetup:
    master: RedisServer
    replica: RedisServer
    sentinels: list[SentinelProcess] = field(default_factory=list)

    @property
    def url(self) -> str:
        nodes = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{nodes}/{SERVICE}"

    def master_port(self) -> int | None:
        reply = _try(self.sentinels[0].port, "SENTINEL", "get-master-addr-by-name", SERVICE)
        return int(reply[1]) if isinstance(reply, list | tuple) else None

    def failover(self) -> int:
        """SENTINEL FAILOVER; returns the new master's port once the Sentinel names it and it is a master."""
        old = self.master_port()

        def started() -> bool:
            # NOGOODSLAVE until the Sentinel has heard from the replica recently enough.
            try:
                with _client(self.sentinels[0].port) as client:
                    client.execute_command("SENTINEL", "FAILOVER", SERVICE)
            except redis.ResponseError as error:
                if "NOGOODSLAVE" in str(error):
                    return False
                raise
            return True

        wait_until(started, timeout=20, interval=0.2, message="the Sentinel found no replica to promote")

        def switched() -> int | None:
            port = self.master_port()
            if port is None or port == old:
                return None
            role = _try(port, "ROLE")
            return port if isinstance(role, list) and role[0] == b"master" else None

        return wait_until(switched, timeout=30, interval=0.1, message="Sentinel failover did not finish")


@contextlib.contextmanager
def sentinel_setup(tmp_path: Path, sentinels: int = 1) -> Iterator[SentinelSetup]:
    """One master, one replica, `sentinels` Sentinels (quorum 1), all on loopback."""
    master = RedisServer(free_port(), ["--dir", str(tmp_path), "--repl-diskless-sync-delay", "0"]).start()
    processes: list[ManagedProcess] = [master]
    try:
        replica_args = ["--dir", str(tmp_path), "--replicaof", "127.0.0.1", str(master.port)]
        replica = RedisServer(free_port(), replica_args).start()
        processes.append(replica)
        wait_until(
            lambda: (_try(replica.port, "INFO", "replication") or {}).get("master_link_status") == "up",
            timeout=15,
            message="the replica did not sync",
        )
        setup = SentinelSetup(master, replica)
        for i in range(sentinels):
            port = free_port()
            config = tmp_path / f"sentinel-{i}.conf"
            config.write_text(
                f"port {port}\nbind 127.0.0.1\ndaemonize no\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {master.port} 1\n"
                f"sentinel down-after-milliseconds {SERVICE} 1000\n"
                f"sentinel failover-timeout {SERVICE} 10000\n"
            )
            sentinel = SentinelProcess(port, config).start()
            processes.append(sentinel)
            setup.sentinels.append(sentinel)
        # A failover needs the Sentinel to know the replica (learned from the master's INFO).
        wait_until(
            lambda: _try(setup.sentinels[0].port, "SENTINEL", "replicas", SERVICE),
            timeout=20,
            interval=0.1,
            message="the Sentinel did not discover the replica",
        )
        yield setup
    finally:
        for process in reversed(processes):
            process.close()


@dataclass
class ClusterSetup:
    nodes: list[RedisServer]

    def url(self, *nodes: RedisServer) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in (nodes or self.nodes[:1]))

    def owner_port(self, slot: int) -> int:
        with _client(self.nodes[0].port) as client:
            for first, last, master, *_ in client.execute_command("CLUSTER", "SLOTS"):
                if first <= slot <= last:
                    return int(master[1])
        raise AssertionError(f"no node owns slot {slot}")

    def node(self, port: int) -> RedisServer:
        return next(n for n in self.nodes if n.port == port)

    def replica_of(self, port: int) -> RedisServer:
        for node in self.nodes:
            info = _try(node.port, "INFO", "replication") or {}
            if info.get("role") == "slave" and info.get("master_port") == port:
                return node
        raise AssertionError(f"no replica of {port}")

    def failover(self, slot: int) -> int:
        """CLUSTER FAILOVER on the replica of the slot's owner; the new owner's port when it took over.

        A manual failover asked for right after the cluster formed can time out (the master has not
        yet learned, by gossip, that this node is its replica); it is then asked for again.
        """
        old = self.owner_port(slot)
        replica = self.replica_of(old)
        for _ in range(5):
            with _client(replica.port) as client:
                client.execute_command("CLUSTER", "FAILOVER")
            try:
                return wait_until(
                    lambda: self.owner_port(slot) if self.owner_port(slot) == replica.port else None,
                    timeout=7,
                    interval=0.05,
                )
            except TimeoutError:
                continue
        raise AssertionError("CLUSTER FAILOVER did not finish")


@contextlib.contextmanager
def cluster_setup(tmp_path: Path, replicas: int = 1) -> Iterator[ClusterSetup]:
    """A 3-master cluster (with `replicas` replicas each) made by `redis-cli --cluster create`."""
    cli = shutil.which("redis-cli")
    if cli is None:
        pytest.skip("redis-cli is not installed")
    nodes: list[RedisServer] = []
    try:
        for _ in range(3 * (1 + replicas)):
            port = free_port()
            args = [
                "--cluster-enabled", "yes",
                "--cluster-config-file", str(tmp_path / f"nodes-{port}.conf"),
                "--cluster-node-timeout", "2000",
                "--cluster-port", str(free_port()),  # else port + 10000, which may be taken or too high
                "--dir", str(tmp_path),
                "--repl-diskless-sync-delay", "0",
            ]  # fmt: skip
            nodes.append(RedisServer(port, args).start())
        create = [cli, "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in nodes)]
        subprocess.run(
            [*create, "--cluster-replicas", str(replicas), "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        for node in nodes:
            wait_until(
                lambda node=node: b"cluster_state:ok" in _bytes(_try(node.port, "CLUSTER", "INFO")),
                timeout=30,
                interval=0.1,
                message=f"cluster node {node.port} did not reach cluster_state:ok",
            )
        for node in nodes:  # a failover needs the replicas in sync first
            wait_until(
                lambda node=node: (
                    (_try(node.port, "INFO", "replication") or {}).get("role") == "master"
                    or (_try(node.port, "INFO", "replication") or {}).get("master_link_status") == "up"
                ),
                timeout=30,
                interval=0.1,
                message=f"cluster replica {node.port} did not sync",
            )
        yield ClusterSetup(nodes)
    finally:
        for node in nodes:
            node.close()
