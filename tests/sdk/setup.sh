#!/usr/bin/env bash
# Installs the official SDKs used as test clients (tests/api/sdk.rs), at pinned versions, into the ignored
# build area: target/sdk/venv (b24pysdk, from tests/sdk/python/requirements.txt) and target/sdk/node
# (@bitrix24/b24jssdk, from tests/sdk/js/package.json + package-lock.json). Idempotent: does nothing when both
# are installed from the current pin files. Needs python3 (with venv), node >= 20, npm, and PyPI / the npm
# registry reachable on first run. Fails loudly otherwise.
set -euo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
pins="$root/tests/sdk"
sdk="${CRMCHAT_SDK_DIR:-$root/target/sdk}"
mkdir -p "$sdk"

# Two test processes may run this at once.
if command -v flock >/dev/null; then
    exec 9>"$sdk/.setup.lock"
    flock 9
fi

# Python: a venv with the pinned requirements; the copy of requirements.txt inside marks a finished install.
venv="$sdk/venv"
if ! cmp -s "$pins/python/requirements.txt" "$venv/crmchat-requirements.txt" || ! "$venv/bin/python" -c '' 2>/dev/null; then
    echo "setup: installing b24pysdk into $venv"
    rm -rf "$venv"
    "${PYTHON:-python3}" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$pins/python/requirements.txt"
    cp "$pins/python/requirements.txt" "$venv/crmchat-requirements.txt"
fi

# Node: `npm ci` from the committed lockfile; the copy of the lockfile inside marks a finished install.
node_dir="$sdk/node"
if ! cmp -s "$pins/js/package-lock.json" "$node_dir/crmchat-package-lock.json" \
    || ! cmp -s "$pins/js/package.json" "$node_dir/package.json"; then
    echo "setup: installing @bitrix24/b24jssdk into $node_dir"
    rm -rf "$node_dir"
    mkdir -p "$node_dir"
    cp "$pins/js/package.json" "$pins/js/package-lock.json" "$node_dir/"
    (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error)
    cp "$pins/js/package-lock.json" "$node_dir/crmchat-package-lock.json"
fi

py_version="$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("b24pysdk"))')"
js_version="$(node -p "require('$node_dir/node_modules/@bitrix24/b24jssdk/package.json').version")"
[[ "$py_version" == 1.3.2 && "$js_version" == 2.2.0 ]] || {
    echo "setup: wrong SDK versions: b24pysdk $py_version, @bitrix24/b24jssdk $js_version" >&2
    exit 1
}
echo "setup: b24pysdk $py_version ($("$venv/bin/python" --version)), @bitrix24/b24jssdk $js_version (node $(node --version))"
