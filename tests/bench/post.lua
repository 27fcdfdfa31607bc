-- wrk script: every request is a chat completion POST with a bearer key, like an OpenAI client's.
-- run.py passes the body and the key in the environment so they match the gateway's config.
wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY") or '{"model":"bench","messages":[{"role":"user","content":"hi"}]}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("BENCH_KEY") or "k1")
