"""Routing rules: a pool's `routing_rules`, read at load and matched against a key's labels.

    "routing_rules": [
      {"match_labels": {"purpose": "playground"}, "action": {"type": "deny"}},
      {"match_labels": {"tier": "batch"}, "action": {"type": "redirect", "target": "gpt-4o-mini"}}
    ]

A rule applies when the request's key definition carries every `match_labels` pair (extra
labels on the key are fine; `{}` matches every key). The first rule that applies decides:
`deny` answers 403, `redirect` serves the request from another alias (whose limits then
apply). A request without a bearer token is not subject to rules; a token with no key
definition has no labels. A redirect's target must be a configured alias: that is checked
at load (the Rust gateway finds out at request time and answers 502).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from onwards.config.model import RoutingRule, Target

if TYPE_CHECKING:
    from onwards.config.parse import _Fields, _Loader


def read_rules(loader: _Loader, pool: _Fields) -> tuple[RoutingRule, ...]:
    value = pool.raw("routing_rules")
    if value is None:
        return ()
    path = pool.at("routing_rules")
    rules: list[RoutingRule] = []
    for index, entry in enumerate(loader.array(value, path)):
        rule = loader.fields(entry, f"{path}[{index}]")
        labels = loader.fields(rule.required("match_labels"), rule.at("match_labels"))
        match = frozenset((name, loader.string(label, labels.at(name))) for name, label in labels.items())
        action = loader.fields(rule.required("action"), rule.at("action"))
        kind = action.optional_string("type", "")
        if kind == "deny":
            rules.append(RoutingRule(match=match, action="deny"))
        elif kind == "redirect":
            target = loader.string(action.required("target"), action.at("target"), non_empty=True)
            rules.append(RoutingRule(match=match, action="redirect", target=target))
        else:
            loader.fail(action.at("type"), "must be 'deny' or 'redirect'")
        action.finish()
        rule.finish()
    return tuple(rules)


def check_redirects(loader: _Loader, targets: Mapping[str, Target], targets_path: str) -> None:
    """Every redirect names a configured alias (after all aliases are read)."""
    from onwards.config.parse import _child  # the one path formatter, shared with the parser

    for alias, target in targets.items():
        for index, rule in enumerate(target.routing_rules):
            if rule.action == "redirect" and rule.target not in targets:
                loader.fail(
                    f"{_child(targets_path, alias)}.routing_rules[{index}].action.target",
                    f"'{rule.target}' is not a configured alias",
                )


def first_match(rules: tuple[RoutingRule, ...], labels: frozenset[tuple[str, str]]) -> RoutingRule | None:
    """The rule that decides for a key with these labels, or None (served as asked)."""
    for rule in rules:
        if rule.match <= labels:
            return rule
    return None
