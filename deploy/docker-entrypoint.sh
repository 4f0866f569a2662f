#!/bin/sh
# Fetches the `coder` CLI matching the Coder deployment (Coder serves it at
# /bin/coder-<os>-<arch>) when the configuration uses the proxy-command SSH transport, then
# runs scaletestd. The token never appears on a command line.
set -eu
config=/etc/scaletestd/config.toml
if [ -f "$config" ] && grep -q 'coder ssh' "$config" && ! command -v coder >/dev/null 2>&1; then
  url="${CODER_URL:-$(sed -n 's/^url *= *"\(.*\)"/\1/p' "$config" | head -n 1)}"
  arch="$(uname -m)"
  case "$arch" in x86_64) arch=amd64 ;; aarch64) arch=arm64 ;; esac
  mkdir -p "$HOME/bin"
  echo "fetching the coder CLI from $url/bin/coder-linux-$arch" >&2
  curl -fsSL --retry 5 -o "$HOME/bin/coder" "$url/bin/coder-linux-$arch"
  chmod +x "$HOME/bin/coder"
fi
exec /usr/local/bin/scaletestd "$@"
