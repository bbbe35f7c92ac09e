# Sourced by scripts/demo.sh (step 7): a real service as a sealed pod, with `sealpod run`.
# Uses the demo's OUT, SEALPOD_HOME, run/refused helpers and its running KMS.

# A Debian rootfs with Python from the catalog's `python` entry (mmdebstrap, built once and
# cached in .venv/catalog-cache; a minute or two the first time). The demo adds its own app.
app="$OUT/notes"
run sealpod catalog build python -o "$app" --set app_dir=scripts/demo/app --set script=notes.py \
  --cache-dir "${SEALPOD_CATALOG_CACHE:-$PWD/.venv/catalog-cache}"
info="$SEALPOD_HOME/kms/server.json"
json_field() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$@"; }
kms_url=$(json_field "$info" url)
kms_id=$(json_field "$info" identity)
sed -e "s|@KMS_URL@|$kms_url|" -e "s|@KMS_IDENTITY@|$kms_id|" \
  scripts/demo/notes.toml.in > "$app/notes.toml"
echo "The spec pins the KMS by its identity (SHA-256 of its TLS key): $kms_id"
run sealpod build --spec "$app/notes.toml" --key "$OUT/author.pem" -o "$OUT/notes-bundle"
sealpod inspect "$OUT/notes-bundle" --json > "$OUT/notes-bundle.json"
notes_m=$(json_field "$OUT/notes-bundle.json" measurement)
signer=$(json_field "$OUT/notes-bundle.json" signer_id)

run sealpod kms secret put notes-password --generate password
run sealpod kms secret put notes-tls --generate tls-cert --dns localhost --dns 127.0.0.1
cat > "$OUT/notes-policy.toml" <<POLICY
# The notes pod, on simulated evidence: its password, a TLS certificate, and its volume key,
# which the KMS generates at the first start.
allow_simulation = true
measurements = ["$notes_m"]

[release]
secrets = ["notes-password", "notes-tls", "volume.notes"]
generate_volume_keys = true
POLICY
run sealpod kms policy put notes "$OUT/notes-policy.toml"
# The owner's client: the password read from the KMS (never printed), the KMS's CA to check TLS.
(umask 077 && sealpod kms secret get notes-password > "$OUT/notes-password")
curl -sS --cacert "$(json_field "$info" ca)" "$kms_url/v1/ca" -o "$OUT/kms-ca.pem"
client() { curl -sS --cacert "$OUT/kms-ca.pem" -u "demo:$(cat "$OUT/notes-password")" "$@"; echo; }

NOTES_PID=""
AGENT_PID=""
# Wait until FILE holds PATTERN, as long as process PID lives (its log shown if it dies).
wait_for_line() {
  for _ in $(seq 1 6000); do
    grep -q "$2" "$1" && return 0
    kill -0 "$3" 2>/dev/null || { cat "$1"; exit 1; }
    sleep 0.01
  done
  echo "timed out waiting for '$2' in $1"; exit 1
}
start_notes() {
  printf '%s$ sealpod run %s --tee sim --signer %s --network host &%s\n' \
    "$dim" "$OUT/notes-bundle" "$signer" "$off"
  : > "$OUT/notes.log"
  local t0
  t0=$(date +%s%N)
  sealpod run "$OUT/notes-bundle" --tee sim --signer "$signer" --network host \
    >> "$OUT/notes.log" 2>&1 &
  NOTES_PID=$!
  wait_for_line "$OUT/notes.log" "ready ok" "$NOTES_PID"
  STARTED_MS=$((($(date +%s%N) - t0) / 1000000))
  sed 's/^/    /' "$OUT/notes.log"
}
stop_notes() {
  local rc=0
  kill -TERM "$NOTES_PID"
  wait "$NOTES_PID" || rc=$?
  NOTES_PID=""
  echo "(SIGTERM forwarded to the workload; sealpod run exited with its status, $rc)"
}
trap 'cleanup; [ -n "$NOTES_PID" ] && kill "$NOTES_PID" 2>/dev/null;
      [ -n "$AGENT_PID" ] && kill "$AGENT_PID" 2>/dev/null; true' EXIT

start_notes
echo "A client talks to it over TLS, with a certificate the KMS issued to the attested pod:"
run client https://localhost:18444/ --data "the first note"
run client https://localhost:18444/
echo "On the host, the volume holds ciphertext only:"
ls "$SEALPOD_HOME/volumes/notes" "$SEALPOD_HOME/volumes/notes/files" | head -n 8
if grep -rq "the first note" "$SEALPOD_HOME/volumes/notes"; then
  echo "UNEXPECTED: the note is in plaintext on the host"; exit 1
fi
echo "(no file under $SEALPOD_HOME/volumes/notes contains 'the first note')"
stop_notes
cp -a "$SEALPOD_HOME/volumes/notes" "$OUT/notes-volume-copy"

echo "Restarted, the pod finds its data:"
start_notes
cold_ms=$STARTED_MS
run client https://localhost:18444/ --data "the second note"
run client https://localhost:18444/
stop_notes

echo "Warm starts: an agent imports sealpod once and forks each sealpod run (docs/agent.md)."
printf '%s$ sealpod agent serve &%s\n' "$dim" "$off"
sealpod agent serve 2> "$OUT/agent.log" &
AGENT_PID=$!
wait_for_line "$OUT/agent.log" "serving" "$AGENT_PID"
export SEALPOD_AGENT=require  # this start must go through the agent
start_notes
unset SEALPOD_AGENT
run sealpod agent status
echo "Start to ready: ${cold_ms} ms without the agent, ${STARTED_MS} ms through it (same pod, same phases)."
run client https://localhost:18444/
stop_notes
kill -TERM "$AGENT_PID"
wait "$AGENT_PID" || true
AGENT_PID=""

echo "The host puts back the older copy of the volume; the KMS's counter catches it:"
rm -rf "$SEALPOD_HOME/volumes/notes"
cp -a "$OUT/notes-volume-copy" "$SEALPOD_HOME/volumes/notes"
refused sealpod run "$OUT/notes-bundle" --tee sim --signer "$signer" --network host
