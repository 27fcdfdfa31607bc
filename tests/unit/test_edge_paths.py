"""The request path normaliser: traversal in every encoding is refused, everything else is canonical."""

from __future__ import annotations

import pytest

from onwards.edge.paths import PathRejected, normalise_path


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"/v1/chat/completions", "/v1/chat/completions"),
        (b"/", "/"),
        (b"/v1//chat///completions", "/v1/chat/completions"),
        (b"/v1/files/a%20b", "/v1/files/a%20b"),
        (b"/v1/files/%61bc", "/v1/files/abc"),  # an escape that needs none is decoded
        (b"/v1/models/caf\xc3\xa9", "/v1/models/caf%C3%A9"),  # raw UTF-8 is encoded, byte for byte
        (b"/v1/models/a:b@c", "/v1/models/a:b@c"),
        (b"/v1/files/x/", "/v1/files/x/"),
        (b"/v1/files/.hidden", "/v1/files/.hidden"),
        (b"/v1/files/...", "/v1/files/..."),
        (b"/v1/files/a..b", "/v1/files/a..b"),
    ],
)
def test_accepted_paths_are_canonical(raw, expected):
    assert normalise_path(raw) == expected
    # Normalising is idempotent: the canonical form is accepted as it is.
    assert normalise_path(expected.encode()) == expected


@pytest.mark.parametrize(
    "raw",
    [
        b"/v1/../../b/v1/chat/completions",
        b"/v1/./chat/completions",
        b"/v1/chat/completions/..",
        b"/v1/%2e%2e/b",
        b"/v1/%2E%2E/b",
        b"/v1/%2e./b",
        b"/v1/.%2E/b",
        b"/v1/%2e/b",
        b"/v1/..%2fb",
        b"/v1/..%2Fb",
        b"/v1/a%2fb",
        b"/v1/%252e%252e/b",  # double-encoded
        b"/v1/%252E%252E/b",
        b"/v1/%252fb",
        b"/v1/%255cb",
        b"/v1/%2525",
        b"/v1\\..\\b",
        b"/v1/a\\b",
        b"/v1/%5cb",
        b"/v1/%5C..%5Cb",
        b"/v1/a%00b",
        b"/v1/a\x00b",
        b"/v1/a\rb",
        b"v1/chat/completions",
        b"",
    ],
)
def test_traversal_and_ambiguous_paths_are_refused(raw):
    with pytest.raises(PathRejected):
        normalise_path(raw)


def test_a_refusal_says_why():
    with pytest.raises(PathRejected, match=r"\. or \.\. segment"):
        normalise_path(b"/v1/%2e%2e/x")
    with pytest.raises(PathRejected, match="encoded slash"):
        normalise_path(b"/v1/a%2Fb")
    with pytest.raises(PathRejected, match="encoded twice"):
        normalise_path(b"/v1/%252e%252e/x")
