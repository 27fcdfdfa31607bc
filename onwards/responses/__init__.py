"""Open Responses: `/v1/responses` served over Chat Completions backends.

`convert` and `stream` translate between the two APIs, `store` keeps responses for
`previous_response_id`, and `loop.run_response_loop` drives a response through model calls
and server-side tool calls over a step store and a tool executor that a host application
can supply (the gateway's own adapter plugs in its built-in ones).
"""
