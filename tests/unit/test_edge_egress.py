"""Egress proxy resolution: environment variables, NO_PROXY matching and the per-provider override."""

from __future__ import annotations

import pytest

from onwards.edge.egress import EgressEnv, check_proxy_url

PROXY = "http://proxy.corp:3128"


def env(**values: str) -> EgressEnv:
    return EgressEnv.from_environ(values)


def test_no_variables_means_direct():
    assert env().proxy_for("https://api.openai.com/v1/") is None


def test_scheme_picks_the_variable():
    e = env(HTTP_PROXY="http://plain:1", HTTPS_PROXY="http://secure:2")
    assert e.proxy_for("http://10.0.0.5:8000/v1/") == "http://plain:1"
    assert e.proxy_for("https://api.openai.com/v1/") == "http://secure:2"


def test_lower_case_wins_over_upper_case():
    e = env(https_proxy="http://lower:1", HTTPS_PROXY="http://upper:2")
    assert e.proxy_for("https://api.openai.com/") == "http://lower:1"


@pytest.mark.parametrize(
    ("no_proxy", "url", "bypassed"),
    [
        ("*", "https://api.openai.com/", True),
        ("api.openai.com", "https://api.openai.com/", True),
        ("openai.com", "https://api.openai.com/", True),
        (".openai.com", "https://api.openai.com/", True),
        ("*.openai.com", "https://api.openai.com/", True),
        ("openai.com", "https://notopenai.com/", False),
        ("localhost, 127.0.0.1", "http://127.0.0.1:9000/", True),
        ("10.0.0.0/8", "http://10.1.2.3:8000/", True),
        ("10.0.0.0/8", "http://11.1.2.3:8000/", False),
        ("api.openai.com:443", "https://api.openai.com/", True),
        ("api.openai.com:8443", "https://api.openai.com/", False),
        ("::1", "http://[::1]:8000/", True),
        ("[::1]:8000", "http://[::1]:8000/", True),
        ("API.OpenAI.com", "https://api.openai.com/", True),
        ("", "https://api.openai.com/", False),
    ],
)
def test_no_proxy(no_proxy, url, bypassed):
    e = env(HTTP_PROXY=PROXY, HTTPS_PROXY=PROXY, NO_PROXY=no_proxy)
    assert (e.proxy_for(url) is None) is bypassed


def test_provider_setting_wins():
    e = env(HTTPS_PROXY=PROXY, NO_PROXY="*")
    assert e.proxy_for("https://api.openai.com/", "http://own:8080") == "http://own:8080"
    e = env(HTTPS_PROXY=PROXY)
    assert e.proxy_for("https://api.openai.com/", False) is None


def test_unusable_proxy_urls():
    assert check_proxy_url(PROXY) is None
    assert check_proxy_url("socks5://p:1080") is not None
    assert check_proxy_url("http://p:notaport") is not None
    assert check_proxy_url("p:3128") is not None
    assert env(HTTPS_PROXY="socks5://p:1080").proxy_for("https://api.openai.com/") is None
