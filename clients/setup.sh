#!/usr/bin/env bash
# Installs what the test helpers' own tests need, at pinned versions, into the ignored build area:
#   target/clients/venv   python3 venv with clients/python/tests/requirements.txt (pytest, b24pysdk) and the
#                         plugin itself (pip install ./clients/python, reinstalled on every run: it is small)
#   target/clients/node   a copy of clients/node with its devDependencies (@bitrix24/b24jssdk) from the
#                         committed package-lock.json (npm ci only when the lockfile changed)
# Needs python3 with venv, node >= 18 and npm; PyPI and the npm registry on first run. Fails loudly otherwise.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
area="${CRMCHAT_CLIENTS_DIR:-$root/target/clients}"
mkdir -p "$area"

# Two runs may set up at once.
if command -v flock >/dev/null; then
    exec 9>"$area/.setup.lock"
    flock 9
fi

pins="$root/clients/python/tests/requirements.txt"
sdk_pins="$root/tests/sdk/python/requirements.txt"
venv="$area/venv"
if ! cat "$pins" "$sdk_pins" | cmp -s - "$venv/crmchat-requirements.txt" || ! "$venv/bin/python" -c '' 2>/dev/null; then
    echo "setup: installing pytest and b24pysdk into $venv"
    rm -rf "$venv"
    "${PYTHON:-python3}" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$pins"
    cat "$pins" "$sdk_pins" >"$venv/crmchat-requirements.txt"
fi
# The plugin as a user installs it (non-editable; setuptools comes from the pins, no build isolation needed).
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation \
    --force-reinstall "$root/clients/python"

node_dir="$area/node"
if ! cmp -s "$root/clients/node/package-lock.json" "$node_dir/crmchat-package-lock.json" \
    || ! cmp -s "$root/clients/node/package.json" "$node_dir/package.json"; then
    echo "setup: installing clients/node's dev dependencies into $node_dir"
    rm -rf "$node_dir"
    mkdir -p "$node_dir"
    cp "$root/clients/node/package.json" "$root/clients/node/package-lock.json" "$node_dir/"
    (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error)
    cp "$root/clients/node/package-lock.json" "$node_dir/crmchat-package-lock.json"
fi
# The package's sources and tests, fresh: node resolves '@crmchat/testing' (itself) and the SDK from here.
rm -rf "$node_dir/src" "$node_dir/test" "$node_dir/README.md"
cp -R "$root/clients/node/src" "$root/clients/node/test" "$root/clients/node/README.md" "$node_dir/"

py_version="$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("b24pysdk"), m.version("pytest"))')"
js_version="$(node -p "require('$node_dir/node_modules/@bitrix24/b24jssdk/package.json').version")"
echo "setup: b24pysdk, pytest $py_version ($("$venv/bin/python" --version)); @bitrix24/b24jssdk $js_version (node $(node --version))"
