"""The listen port: a port some process already listens on stops the start, unless sharing is asked for.

Rule: Granian binds every worker's listener with SO_REUSEPORT, so without this check a second gateway
on a busy port starts silently and takes part of the traffic. A plain bind (SO_REUSEADDR only, which
still allows a port left in TIME_WAIT) fails when anything listens there; `--reuse-port` skips it.
"""

from __future__ import annotations

import errno
import socket


def port_problem(host: str, port: int) -> str | None:
    """Why (host, port) cannot be listened on, or None when it is free."""
    if port == 0:
        return None  # the kernel picks a free one
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return f"cannot resolve listen address {host!r}: {exc.strerror}"
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return (
                f"port {port} on {host} is already in use (another gateway?); "
                "stop it, pick another --port, or pass --reuse-port to share it on purpose"
            )
        if exc.errno == errno.EACCES:
            return f"no permission to listen on port {port} on {host}"
        return f"cannot listen on {host}:{port}: {exc.strerror}"
    finally:
        sock.close()
    return None
