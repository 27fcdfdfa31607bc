"""Which request headers reach the upstream (behaviour reference §3.6)."""

from __future__ import annotations

import pytest

from onwards.proxy.headers import DROP_DOWNSTREAM, forwardable

HOP_BY_HOP = [
    b"connection",
    b"keep-alive",
    b"proxy-authenticate",
    b"proxy-authorization",
    b"proxy-connection",
    b"te",
    b"trailer",
    b"transfer-encoding",
    b"upgrade",
]
CREDENTIALS = [b"authorization", b"x-api-key", b"api-key"]
BROWSER = [b"cookie", b"origin", b"referer"]
SEC_FETCH = [
    b"sec-fetch-site",
    b"sec-fetch-mode",
    b"sec-fetch-dest",
    b"sec-fetch-user",
    b"sec-fetch-storage-access",
]
SEC_CH_UA = [b"sec-ch-ua", b"sec-ch-ua-mobile", b"sec-ch-ua-platform", b"sec-ch-ua-full-version-list"]
CONDITIONAL = [b"if-modified-since", b"if-none-match", b"if-match", b"if-unmodified-since", b"if-range"]
# Set by the client library from the request itself; the gateway frames the upstream request anew.
FRAMING = [b"host", b"content-length"]
OWN = [b"model-override"]


@pytest.mark.parametrize(
    "name", HOP_BY_HOP + CREDENTIALS + BROWSER + SEC_FETCH + SEC_CH_UA + CONDITIONAL + FRAMING + OWN
)
def test_dropped(name):
    assert not forwardable(name)


@pytest.mark.parametrize(
    "name",
    [
        b"content-type",
        b"accept",
        b"accept-encoding",
        b"user-agent",
        b"x-stainless-lang",
        b"x-stainless-package-version",
        b"x-stainless-retry-count",
        b"openai-organization",
        b"openai-project",
        b"openai-beta",
        b"anthropic-version",
        b"anthropic-beta",
        b"x-custom",
        b"traceparent",
        # Names that merely start like a dropped one are not dropped.
        b"authorization-hint",
        b"x-api-key-id",
        b"secret",
        b"if-custom",
    ],
)
def test_kept(name):
    assert forwardable(name)


def test_response_framing_headers_are_not_copied_downstream():
    # The ASGI server frames the client response; a copied length or chunking header would corrupt it.
    for name in (b"content-length", b"transfer-encoding", b"connection", b"keep-alive", b"date", b"server"):
        assert name in DROP_DOWNSTREAM
    for name in (b"content-type", b"content-encoding", b"cache-control", b"x-ratelimit-remaining-requests"):
        assert name not in DROP_DOWNSTREAM
