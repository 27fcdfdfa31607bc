"""`trusted` and `propagate_trace_context` as the Rust onwards resolves them: a provider's own
`trusted` wins over its pool's, and trace propagation follows the resolved trust unless set
(handlers.rs resolve_trace_propagation_* tests)."""

from __future__ import annotations

from onwards.config import Target, parse_config


def target(spec: object) -> Target:
    return parse_config({"targets": {"m": spec}}, "c.json", warn_unknown=False).targets["m"]


def flags(t: Target) -> list[tuple[bool, bool]]:
    return [(p.trusted, p.propagate_trace_context) for p in t.providers]


def test_untrusted_by_default_and_trace_context_withheld():
    assert flags(target({"url": "http://a"})) == [(False, False)]


def test_pool_trusted_is_the_default_for_its_providers():
    t = target({"trusted": True, "providers": [{"url": "http://a"}, {"url": "http://b", "trusted": False}]})
    assert t.trusted
    assert flags(t) == [(True, True), (False, False)]


def test_provider_trusted_overrides_an_untrusted_pool():
    t = target({"trusted": False, "providers": [{"url": "http://a", "trusted": True}, {"url": "http://b"}]})
    assert flags(t) == [(True, True), (False, False)]


def test_explicit_propagate_true_overrides_untrusted_and_false_overrides_trusted():
    t = target(
        {
            "trusted": True,
            "providers": [
                {"url": "http://a", "propagate_trace_context": False},
                {"url": "http://b", "trusted": False, "propagate_trace_context": True},
            ],
        }
    )
    assert flags(t) == [(True, False), (False, True)]


def test_single_provider_trusted_is_the_pool_trust():
    t = target({"url": "http://a", "trusted": True})
    assert t.trusted and flags(t) == [(True, True)]


def test_legacy_list_elements_keep_their_own_trust():
    # The Rust gateway refuses mixed values here; honouring each element's own is unambiguous.
    t = target([{"url": "http://a", "trusted": True}, {"url": "http://b"}])
    assert t.trusted
    assert flags(t) == [(True, True), (False, False)]
