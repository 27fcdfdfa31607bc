"""Open Responses: `/v1/responses` served over Chat Completions backends.

`convert`, `items` and `stream` translate between the two APIs; `store` keeps responses for
`previous_response_id`; `loop.run_response_loop` drives a response through model calls and
server-side tool calls over the interfaces in `protocols` (a step store, a tool executor, a
model client, an event sink), which a host application can supply. The gateway's adapter
(`gateway`) runs the same loop with its built-in store (`steps`), its HTTP tools (`http`) and
a model client that sends each step through the gateway's own request path (`subrequest`).
"""
