"""Token limits on the request path: the estimate reserved at admission, the usage a provider
reports (JSON bodies and SSE streams), and the OpenAI rate-limit headers built from what the
limiter said. Pure functions and small incremental parsers; the limiter itself is onwards.limits."""
