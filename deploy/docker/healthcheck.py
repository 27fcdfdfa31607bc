#!/usr/bin/env python3
"""The image's HEALTHCHECK: exit 0 when GET /health on this container answers 200, else 1.

Python, because the slim base image has no curl; it reads the same ONWARDS_PORT the gateway does.
"""

import os
import sys
import urllib.request

port = os.environ.get("ONWARDS_PORT") or "3000"
try:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=3) as response:
        sys.exit(0 if response.status == 200 else 1)
except OSError as exc:
    print(f"healthcheck: {exc}", file=sys.stderr)
    sys.exit(1)
