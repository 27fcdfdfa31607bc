#!/bin/sh
# Install Onwards from a source tree into a new virtualenv, then prove the install runs.
# The image's build stage runs exactly this; tests/deploy/test_docker.py runs it in a temporary
# directory, so the image's install step is exercised without building the image.
#   install.sh VENV [SOURCE]
set -eu
venv="$1"
src="${2:-.}"
python3 -m venv "$venv"
"$venv/bin/pip" install --no-cache-dir --disable-pip-version-check --quiet "$src"
# The Lua scripts ship inside the package; a missing one would only show at the first request.
# -I: the source tree in the working directory must not shadow the installed package.
"$venv/bin/python" -I -c "import importlib.resources as r; [r.files('onwards.lua').joinpath(f'{n}.lua').read_text() for n in ('admit', 'release', 'renew')]"
"$venv/bin/onwards" --version
# The example config names ${OPENAI_API_KEY}; the check needs some value, not a real key.
OPENAI_API_KEY="${OPENAI_API_KEY:-sk-none}" "$venv/bin/onwards" config check -f "$src/examples/config.json"
