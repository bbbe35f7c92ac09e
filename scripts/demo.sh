#!/usr/bin/env bash
# The main job, end to end, as a user runs it: build and sign a sealed pod, attest it on the
# simulated TEE, have an embedded KMS release its secrets only to it, and keep its data in an
# encrypted volume. Each refusal a user should see is shown too. Everything stays under
# demo-out/ (SEALPOD_HOME included); nothing touches the user's own sealpod state.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT="${DEMO_OUT:-$PWD/demo-out}"
rm -rf "$OUT"
mkdir -p "$OUT"
export SEALPOD_HOME="$OUT/home"
SERVER_PID=""

bold=$'\e[1m'; dim=$'\e[2m'; green=$'\e[32m'; red=$'\e[31m'; off=$'\e[0m'
if [ ! -t 1 ]; then bold=""; dim=""; green=""; red=""; off=""; fi
step() { printf '\n%s== %s%s\n' "$bold" "$*" "$off"; }
run() { printf '%s$ %s%s\n' "$dim" "$*" "$off"; "$@"; }
# Run a command that must FAIL; show its refusal and its exit code.
refused() {
  printf '%s$ %s%s\n' "$dim" "$*" "$off"
  local rc=0
  "$@" || rc=$?
  if [ "$rc" -eq 0 ]; then
    printf '%sUNEXPECTED: the command above was accepted%s\n' "$red" "$off"
    exit 1
  fi
  printf '%s-> refused, exit code %s (as it should be)%s\n' "$green" "$rc" "$off"
}
cleanup() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
}
trap cleanup EXIT

step "1. An author key and a sample pod"
run sealpod keygen -o "$OUT/author.pem"
run sealpod init "$OUT/app"

step "2. Build: measure every file and sign the manifest"
run sealpod build --spec "$OUT/app/sealpod.toml" --key "$OUT/author.pem" -o "$OUT/bundle"
run sealpod inspect "$OUT/bundle"
run sealpod verify-bundle "$OUT/bundle"

step "3. The host tampers with a file of the bundle: verification lists the change"
cp -a "$OUT/bundle" "$OUT/bundle-tampered"
victim=$(find "$OUT/bundle-tampered/rootfs" -type f | sort | head -n 1)
echo "# injected by the host" >> "$victim"
refused sealpod verify-bundle "$OUT/bundle-tampered"

step "4. Attest the bundle on the SIMULATED TEE (no hardware protection) and verify"
run sealpod sim init --exist-ok
nonce=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
run sealpod attest --tee sim --bundle "$OUT/bundle" --nonce "$nonce" \
  --key-out "$OUT/ephemeral.pem" -o "$OUT/evidence.json"
run sealpod verify "$OUT/evidence.json" --allow-simulation
echo "Without --allow-simulation the same evidence is refused:"
refused sealpod verify "$OUT/evidence.json"

step "5. A key broker releases secrets only to the attested bundle"
run sealpod kms init --master-key-file "$OUT/master.key"
sealpod kms serve --port 0 --master-key-file "$OUT/master.key" --trust-sim --no-pcs \
  --no-access-log --log-level warning > "$OUT/kms.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 100); do
  [ -f "$SEALPOD_HOME/kms/server.json" ] && break
  kill -0 "$SERVER_PID" 2>/dev/null || { cat "$OUT/kms.log"; exit 1; }
  sleep 0.1
done
printf 'KMS listening: %s\n' "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["url"])' "$SEALPOD_HOME/kms/server.json")"
printf 'not-a-real-password-%s' "$(python3 -c 'import secrets; print(secrets.token_hex(4))')" > "$OUT/db-password.txt"
run sealpod kms secret put db-password --from-file "$OUT/db-password.txt"
run sealpod kms secret put volume-key --generate bytes:32
measurement=$(sealpod inspect "$OUT/bundle" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["measurement"])')
cat > "$OUT/policy.toml" <<EOF
# Release db-password and volume-key to exactly this bundle, on simulated evidence.
allow_simulation = true
measurements = ["$measurement"]

[release]
secrets = ["db-password", "volume-key"]
EOF
run sealpod kms policy put app "$OUT/policy.toml"
run sealpod kms fetch --bundle "$OUT/bundle" --tee sim --out-dir "$OUT/secrets" db-password volume-key
echo "The author changes a config file and rebuilds: another measurement, so the KMS refuses it:"
echo "# a changed config" >> "$(find "$OUT/app/rootfs" -name '*.conf' | head -n 1)"
run sealpod build --spec "$OUT/app/sealpod.toml" --key "$OUT/author.pem" -o "$OUT/bundle-changed" --json > /dev/null
refused sealpod kms fetch --bundle "$OUT/bundle-changed" --tee sim db-password
run sealpod kms audit --verify

step "6. An encrypted volume keyed by the released volume key"
run sealpod volume create "$OUT/volume" --key-file "$OUT/secrets/volume-key"
mkdir -p "$OUT/plain" && echo "hello from inside the pod" > "$OUT/plain/greeting.txt"
run sealpod volume import "$OUT/volume" "$OUT/plain" --key-file "$OUT/secrets/volume-key"
run sealpod volume info "$OUT/volume" --key-file "$OUT/secrets/volume-key"
run sealpod volume fsck "$OUT/volume" --key-file "$OUT/secrets/volume-key"
echo "The host flips one byte of an encrypted file; fsck finds it:"
blob=$(find "$OUT/volume/files" -type f -size +0 | sort | tail -n 1)
python3 - "$blob" <<'EOF'
import sys
p = sys.argv[1]
b = bytearray(open(p, "rb").read())
b[len(b) // 2] ^= 1
open(p, "wb").write(bytes(b))
EOF
refused sealpod volume fsck "$OUT/volume" --key-file "$OUT/secrets/volume-key"

step "7. A real service as a sealed pod: sealpod run"
if [ "$(id -u)" != 0 ]; then
  echo "This part needs root (FUSE and a private mount namespace for the encrypted volume); skipped."
else
  # shellcheck source=demo/service.sh
  . scripts/demo/service.sh
fi

step "Done. Everything above lives in $OUT"
