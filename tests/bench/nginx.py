"""nginx as the benchmark's upstream: one worker, a fixed chat completion, one listening port per client.

Every proxy under test gets a port of its own on the same nginx, so the upstream connections of one
proxy can be counted by port while the others sit idle with their pools open.
"""

from __future__ import annotations

import http.client
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from tests.bench.payloads import CHAT_COMPLETION, CHAT_PATH
from tests.support.processes import LOOPBACK, ManagedProcess, http_status

HEALTH_PATH = "/__health"
STATUS_PATH = "/__status"


def nginx_binary() -> str | None:
    """The nginx executable (Debian puts it in /usr/sbin, which a user's PATH may lack)."""
    found = shutil.which("nginx")
    if found:
        return found
    for candidate in ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx"):
        if Path(candidate).is_file():
            return candidate
    return None


def render_conf(prefix: Path, ports: Sequence[int]) -> str:
    body = CHAT_COMPLETION.decode()
    if "'" in body or "$" in body or "\\" in body:
        raise ValueError("the canned answer must not contain ', $ or \\ (nginx string syntax)")
    listens = "\n".join(f"        listen {LOOPBACK}:{port} backlog=4096;" for port in ports)
    return f"""\
worker_processes 1;
daemon off;
master_process on;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{
    worker_connections 8192;
    multi_accept on;
}}
http {{
    access_log off;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    # Never close a keep-alive connection during a run: connection churn would be nginx's doing,
    # and the benchmark wants to see the proxies' own.
    keepalive_requests 10000000;
    keepalive_timeout 600s;
    client_body_buffer_size 64k;
    server {{
{listens}
        location = {CHAT_PATH} {{
            default_type application/json;
            return 200 '{body}';
        }}
        location = {HEALTH_PATH} {{
            return 204;
        }}
        # Connections accepted so far, on every port: the exact count of connections a proxy opened
        # during a run, which socket-table sampling can miss (loopback reuses TIME-WAIT ports at once).
        location = {STATUS_PATH} {{
            stub_status;
        }}
    }}
}}
"""


class NginxUpstream(ManagedProcess):
    label = "nginx"

    def __init__(self, ports: Sequence[int]) -> None:
        binary = nginx_binary()
        if binary is None:
            raise FileNotFoundError("nginx is not installed (apt-get install -y nginx-light)")
        if not ports:
            raise ValueError("nginx needs at least one port")
        self.ports = list(ports)
        self._status_questions = 0
        self.prefix = Path(tempfile.mkdtemp(prefix="onwards-bench-nginx-"))
        conf = self.prefix / "nginx.conf"
        conf.write_text(render_conf(self.prefix, self.ports))
        # -e: without it nginx first opens its compiled-in error log under /var/log, which fails unprivileged.
        super().__init__(
            [binary, "-p", str(self.prefix), "-e", str(self.prefix / "error.log"), "-c", str(conf)]
        )

    def ready(self) -> bool:
        return all(http_status(LOOPBACK, port, HEALTH_PATH) == 204 for port in self.ports)

    def accepts(self) -> int:
        """Connections nginx has accepted since it started, not counting these status questions."""
        self._status_questions += 1
        conn = http.client.HTTPConnection(LOOPBACK, self.ports[0], timeout=5)
        try:
            conn.request("GET", STATUS_PATH)
            response = conn.getresponse()
            text = response.read().decode()
        finally:
            conn.close()
        # "Active connections: 3 \nserver accepts handled requests\n 12 12 40 \n..."
        match = re.search(r"^\s*(\d+)\s+\d+\s+\d+\s*$", text, re.M)
        if response.status != 200 or match is None:
            raise RuntimeError(f"nginx status answered {response.status}: {text!r}")
        return int(match.group(1)) - self._status_questions

    def close(self) -> None:
        super().close()
        shutil.rmtree(self.prefix, ignore_errors=True)
