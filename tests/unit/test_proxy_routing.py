"""Which model a request names (header before body) and the bounded route label used in metrics."""

from __future__ import annotations

import orjson
import pytest

from onwards import errors
from onwards.errors import GatewayError
from onwards.proxy.routing import requested_model, route_group


def error_of(exc: pytest.ExceptionInfo[GatewayError]) -> dict:
    return orjson.loads(exc.value.body)["error"]


def test_model_comes_from_the_body_and_the_decoded_body_is_returned():
    model, decoded = requested_model(None, b'{"model": "gpt-4", "messages": []}')
    assert model == "gpt-4"
    assert decoded == {"model": "gpt-4", "messages": []}


def test_model_override_header_wins_over_the_body():
    model, decoded = requested_model(b"claude", b'{"model": "gpt-4"}')
    assert model == "claude"
    # The body was not needed, so it was not parsed.
    assert decoded is None


def test_model_override_needs_no_body_and_does_not_look_at_it():
    assert requested_model(b"whisper", b"")[0] == "whisper"
    # Multipart audio uploads are not JSON; the header alone routes them.
    assert requested_model(b"whisper", b"--boundary\r\nnot json")[0] == "whisper"


@pytest.mark.parametrize("header", [b"caf\xc3\xa9", b"nul\x00", b"del\x7f", b"line\nbreak"])
def test_model_override_must_be_ascii_text_without_falling_back_to_the_body(header):
    # As the Rust gateway: the same "could not parse onwards model" 400, param model.
    with pytest.raises(GatewayError) as exc:
        requested_model(header, b'{"model": "gpt-4"}')
    assert exc.value.status == 400
    assert exc.value.body == errors.MISSING_MODEL
    assert error_of(exc)["param"] == "model"


def test_model_override_accepts_printable_ascii_spaces_and_tabs():
    text = bytes(range(0x20, 0x7F)) + b"\t"
    assert requested_model(text, b"")[0] == text.decode()
    assert requested_model(b"two words", b"")[0] == "two words"
    assert requested_model(b"", b'{"model": "gpt-4"}')[0] == ""  # looked up, then not found


def test_empty_body_without_header_is_a_400_naming_the_model_param():
    with pytest.raises(GatewayError) as exc:
        requested_model(None, b"")
    assert exc.value.status == 400
    err = error_of(exc)
    assert err["param"] == "model"
    assert err["code"] == "bad_request"
    assert err["type"] == "invalid_request_error"
    assert "Model-Override" in err["message"]


@pytest.mark.parametrize("body", [b"{not json", b'{"model": "gpt"', b"\xff\xfe", b"model=gpt"])
def test_invalid_json_is_a_400_missing_model(body):
    with pytest.raises(GatewayError) as exc:
        requested_model(None, body)
    assert exc.value.status == 400
    assert exc.value.body == errors.MISSING_MODEL


@pytest.mark.parametrize("body", [b"[]", b'["gpt"]', b'"gpt"', b"42", b"null", b"true"])
def test_json_that_is_not_an_object_is_a_400(body):
    with pytest.raises(GatewayError) as exc:
        requested_model(None, body)
    assert exc.value.status == 400
    assert error_of(exc)["param"] == "model"


@pytest.mark.parametrize("body", [b"{}", b'{"model": null}', b'{"model": 4}', b'{"model": ["gpt"]}'])
def test_object_without_a_usable_model_is_a_400(body):
    with pytest.raises(GatewayError) as exc:
        requested_model(None, body)
    assert exc.value.status == 400
    assert exc.value.body == errors.MISSING_MODEL


@pytest.mark.parametrize(
    "path",
    ["/v1/chat/completions", "/v1/embeddings", "/v1/completions", "/v1/responses", "/v1/models"],
)
def test_known_routes_keep_their_name(path):
    assert route_group(path) == path


@pytest.mark.parametrize(
    ("path", "group"),
    [
        ("/v1/files/file-abc123", "/v1/other"),
        ("/v1/chat/completions/extra", "/v1/other"),
        ("/v1/chat/completions/", "/v1/other"),
        ("/v2/anything", "other"),
        ("/", "other"),
    ],
)
def test_unknown_routes_are_grouped(path, group):
    assert route_group(path) == group


def test_route_labels_stay_bounded_whatever_the_paths():
    # Every distinct path a client invents must not become a new metrics label.
    labels = {route_group(f"/v1/files/{i}") for i in range(500)} | {
        route_group(f"/x/{i}") for i in range(500)
    }
    assert labels == {"/v1/other", "other"}
