#!/usr/bin/env bash
# Installs the Debian packages masktune builds and tests with, then fetches
# the model (scripts/fetch_model.sh). Idempotent: silent and fast (one dpkg
# query, one file test) when everything is already present.
set -euo pipefail

packages=(
  build-essential cmake pkg-config
  doctest-dev          # tests
  nlohmann-json3-dev   # JSON: safetensors headers, masker lists, channel files
  libcli11-dev         # command-line parsing
  libyaml-cpp-dev      # sweep files
  librandom123-dev     # counter-based Philox: the same draws on any thread or device
  libsqlite3-dev       # storage/
  libzmq3-dev          # coordinator and workers
  cppzmq-dev
  libopenblas-dev      # the model runtime's matrix products
  libboost-dev         # Asio and Beast: masktune dashboard's HTTP server
  clang-format         # make format-check (.ci/run) and make format
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  sudo_cmd=()
  [ "$(id -u)" -ne 0 ] && sudo_cmd=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -qq >/dev/null
  "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The model the Llama runtime and its tests read (silent when already present).
"$(dirname "${BASH_SOURCE[0]}")/fetch_model.sh"
