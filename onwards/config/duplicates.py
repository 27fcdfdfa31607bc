"""Find a key given twice in one JSON object of a config file.

JSON parsers keep the last of two equal keys without a word, so a config with two
`rate_limit` entries for one target would silently use the second. The config is refused
instead, naming where the repeat is. orjson (which parses the config) has no hook for
this, so the already-valid bytes are decoded once more with the standard library, whose
`object_pairs_hook` sees every pair; configs are small and loaded rarely.
"""

from __future__ import annotations

import json

PathPart = str | int


def first_duplicate_key(body: bytes) -> tuple[PathPart, ...] | None:
    """The path to the first repeated key (object names and list indexes), or None.

    `body` must be JSON that orjson already accepted; anything the standard library still
    cannot decode is left to that earlier verdict.
    """
    repeated: dict[int, str] = {}

    def pairs_hook(pairs: list[tuple[str, object]]) -> dict[str, object]:
        obj = dict(pairs)
        if len(obj) != len(pairs):
            seen: set[str] = set()
            for name, _ in pairs:
                if name in seen:
                    repeated[id(obj)] = name
                    break
                seen.add(name)
        return obj

    try:
        tree = json.loads(body, object_pairs_hook=pairs_hook)
    except (ValueError, RecursionError):
        return None
    if not repeated:
        return None
    return _find(tree, (), repeated)


def _find(node: object, path: tuple[PathPart, ...], repeated: dict[int, str]) -> tuple[PathPart, ...] | None:
    # Document order: an outer repeat is reported before anything inside it.
    if isinstance(node, dict):
        name = repeated.get(id(node))
        if name is not None:
            return (*path, name)
        for key, value in node.items():
            found = _find(value, (*path, key), repeated)
            if found is not None:
                return found
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found = _find(value, (*path, index), repeated)
            if found is not None:
                return found
    return None
