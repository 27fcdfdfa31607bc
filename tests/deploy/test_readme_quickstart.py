"""README's first command and quickstart, run as a new user would: no provider key, no network.

The gateway is started with README command 1's own invocation (only its ports moved to free ones,
through ONWARDS_* variables, so parallel runs never collide); the README's curl lines and its
OpenAI SDK snippet are run as written, against that gateway. The example config's `demo` model is
served by the built-in mock provider, so every one of them must answer.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from openai import AuthenticationError, OpenAI

from tests.support.processes import LOOPBACK, REPO_ROOT, ManagedProcess, free_port, http_status, wait_until

pytestmark = pytest.mark.integration

README = (REPO_ROOT / "README.md").read_text()
DEMO_KEY = "sk-onwards-demo"


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, re.S)


def command_one() -> str:
    """The gateway invocation of README command 1 (what follows its install steps)."""
    first = code_blocks("bash")[0].strip()
    invocation = first.split("&&")[-1].strip()
    assert "onwards -f examples/config.json" in invocation, first
    return invocation


class ReadmeGateway(ManagedProcess):
    label = "readme-gateway"

    def __init__(self, port: int, metrics_port: int) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ONWARDS_") and k != "OPENAI_API_KEY"}
        env.update(
            # The installed `onwards` script of this environment, as `pip install .` puts it on PATH.
            PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '')}",
            ONWARDS_HOST=LOOPBACK,
            ONWARDS_PORT=str(port),
            ONWARDS_METRICS_HOST=LOOPBACK,
            ONWARDS_METRICS_PORT=str(metrics_port),
        )
        super().__init__(["bash", "-c", command_one()], env=env)
        self.port = port
        self.metrics_port = metrics_port

    def ready(self) -> bool:
        return http_status(LOOPBACK, self.port, "/ready") == 200


@pytest.fixture(scope="module")
def gateway() -> Iterator[ReadmeGateway]:
    if shutil.which("onwards", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("the onwards script is not installed next to this Python (pip install .)")
    with ReadmeGateway(free_port(), free_port()) as gw:
        yield gw
        print(gw.describe())


def local(text: str, gw: ReadmeGateway) -> str:
    return text.replace("localhost:3000", f"{LOOPBACK}:{gw.port}").replace(
        "localhost:9090", f"{LOOPBACK}:{gw.metrics_port}"
    )


def readme_curls() -> list[str]:
    block = next(b for b in code_blocks("bash") if "curl http://localhost:3000/v1/chat/completions" in b)
    return [line.strip() for line in block.replace("\\\n", " ").splitlines() if line.strip()]


def test_the_readme_curl_lines_answer(gateway):
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    outputs = []
    for line in readme_curls():
        done = subprocess.run(
            ["bash", "-c", local(line, gateway) + " --silent --show-error --max-time 30"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, (line, done.stderr)
        outputs.append(done.stdout)
    whole, stream, models, health, metrics = outputs
    answer = json.loads(whole)
    assert answer["choices"][0]["message"]["content"].endswith("You said: Hello!")
    assert stream.rstrip().endswith("data: [DONE]")
    deltas = [json.loads(line[6:]) for line in stream.splitlines() if line.startswith("data: {")]
    assert "".join(d["choices"][0]["delta"].get("content", "") for d in deltas).endswith("You said: Hello!")
    assert "demo" in [m["id"] for m in json.loads(models)["data"]]
    assert json.loads(health)["status"] == "healthy"
    assert "# TYPE onwards_requests_total counter" in metrics
    # A request is counted after its last byte, so the count can trail the answer by a moment.
    wait_until(
        lambda: 'target="demo"' in get_text(gateway.metrics_port, "/metrics"),
        timeout=15,
        message="the demo requests were never counted",
    )


def get_text(port: int, path: str) -> str:
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=10)
    try:
        conn.request("GET", path)
        return conn.getresponse().read().decode()
    finally:
        conn.close()


def test_the_readme_sdk_snippet_answers(gateway):
    snippet = local(code_blocks("python")[0], gateway)
    done = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    whole, streamed = done.stdout.split("\n", 1)
    assert whole == "This is the Onwards mock provider. You said: Hi"
    assert streamed == "This is the Onwards mock provider. You said: Hi"


def test_sdk_streaming_with_usage_and_embeddings(gateway):
    client = OpenAI(
        base_url=f"http://{LOOPBACK}:{gateway.port}/v1", api_key=DEMO_KEY, max_retries=0, timeout=30
    )
    chunks = list(
        client.chat.completions.create(
            model="demo",
            messages=[{"role": "user", "content": "count these words"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == 3
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.endswith("You said: count these words")
    assert chunks[-1].usage.completion_tokens == len(text.split())
    # The SDK asks for base64 embeddings and decodes them itself.
    vectors = client.embeddings.create(model="demo", input=["one", "two"])
    assert [len(d.embedding) for d in vectors.data] == [16, 16]
    assert vectors.data[0].embedding != vectors.data[1].embedding


def test_a_wrong_key_is_refused_in_openai_shape(gateway):
    client = OpenAI(
        base_url=f"http://{LOOPBACK}:{gateway.port}/v1", api_key="sk-wrong", max_retries=0, timeout=30
    )
    with pytest.raises(AuthenticationError):
        client.chat.completions.create(model="demo", messages=[{"role": "user", "content": "Hi"}])
