"""Strict mode (`strict_mode: true`): typed routes, requests checked against the OpenAI schema,
success bodies rebuilt through it, and untrusted providers' errors replaced by standard ones.

The modules here are pure (bytes and JSON values in, bytes out); the request path calls them.
`routes` maps paths to surfaces, `validate` checks requests, `success` and `stream` rebuild
2xx bodies, `errors` standardizes errors and finds errors hidden in 2xx bodies.
"""
