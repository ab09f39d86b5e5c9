#!/usr/bin/env bash
# `make screenshot`: docs/demo-partitions.png, what a newcomer sees in `make demo`: search_index's
# partitions page, taken with a headless Chromium from a demo that is already running (start
# `make demo` in another terminal first). Not part of `make test`: it needs Debian's `chromium`,
# which it installs if missing (apt-get, as root or through sudo).
#
#   DEMO_PORT=3000         the running demo's port
#   SCREENSHOT_WAIT=180    seconds to wait for every partition of search_index to be materialized
#                          and for their runs to have finished
#   SCREENSHOT_BUDGET=15000  virtual milliseconds the page gets to render before the shot
#   SCREENSHOT_OUT=docs/demo-partitions.png  where the picture goes
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

port=${DEMO_PORT:-3000}
base="http://127.0.0.1:$port"
asset=search_index
out=${SCREENSHOT_OUT:-docs/demo-partitions.png}
wait_s=${SCREENSHOT_WAIT:-180}
budget=${SCREENSHOT_BUDGET:-15000}

if ! command -v chromium >/dev/null 2>&1; then
    echo "screenshot: installing Debian's chromium"
    sudo=; [ "$(id -u)" = 0 ] || sudo=sudo
    apt_log=$(mktemp)
    # The lock timeout: another apt-get on the machine makes this one wait instead of failing.
    if ! { $sudo apt-get update -qq &&
           $sudo env DEBIAN_FRONTEND=noninteractive \
               apt-get install -y -qq -o DPkg::Lock::Timeout=300 chromium; } >"$apt_log" 2>&1; then
        tail -n 30 "$apt_log" >&2; rm -f "$apt_log"
        echo "screenshot: could not install chromium" >&2
        exit 1
    fi
    rm -f "$apt_log"
fi

if ! curl -fsS -o /dev/null --max-time 10 "$base/server_info" 2>/dev/null; then
    echo "screenshot: no demo answering on $base: start \`make demo\` in another terminal first" >&2
    exit 1
fi

# "materialized total running first-key" of search_index's partitions, from Dagster's GraphQL API:
# running counts the runs of its partitions not finished yet (the page shows a run still going as
# a spinner), the key is URL-encoded; "0 0 0 -" until the code location has loaded.
partitions() {
    python3 - "$base/graphql" "$asset" <<'EOF'
import json, sys, urllib.parse, urllib.request
query = """query($key: AssetKeyInput!) {
  assetNodeOrError(assetKey: $key) { ... on AssetNode {
    partitionKeys
    assetPartitionStatuses { ... on DefaultPartitionStatuses { materializedPartitions } } } }
  runsOrError(filter: {statuses: [QUEUED, NOT_STARTED, STARTING, STARTED, CANCELING]}) {
    ... on Runs { results { tags { key } assetSelection { path } } } } }"""
asset = sys.argv[2]
body = json.dumps({"query": query, "variables": {"key": {"path": [asset]}}}).encode()
req = urllib.request.Request(sys.argv[1], body, {"Content-Type": "application/json"})
try:
    with urllib.request.urlopen(req, timeout=30) as resp:
        data = json.load(resp)["data"]
    node = data["assetNodeOrError"]
    done = node["assetPartitionStatuses"].get("materializedPartitions", [])
    keys = node["partitionKeys"]
    running = sum(1 for run in data["runsOrError"]["results"]
                  if any(t["key"] == "dagster/partition" for t in run["tags"])
                  and (run["assetSelection"] is None
                       or any(k["path"] == [asset] for k in run["assetSelection"])))
    print(len(done), len(keys), running, urllib.parse.quote(keys[0], safe="") if keys else "-")
except Exception:
    print(0, 0, 0, "-")
EOF
}

echo "screenshot: waiting (up to ${wait_s}s) for every partition of $asset to be materialized" \
     "by a finished run"
deadline=$((SECONDS + wait_s))
while :; do
    read -r materialized total running key < <(partitions)
    if [ "$total" -gt 0 ] && [ "$materialized" -eq "$total" ] && [ "$running" -eq 0 ]; then
        echo "screenshot: $materialized/$total partition(s) materialized"
        break
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
        echo "screenshot: after ${wait_s}s, $materialized/$total partition(s) of $asset" \
             "materialized, $running run(s) of them not finished; taking the screenshot anyway" >&2
        break
    fi
    sleep 5
done

# The partitions page with the first partition (books) selected: its materialization's metadata.
# Chromium reaches the UI as http://flusso-demo:PORT (resolved to 127.0.0.1 by Chromium alone): on
# a 127.0.0.1 or localhost origin the UI covers the page with a "Join the Dagster community" dialog
# until someone dismisses it, and dismissing it for the picture would change the demo's instance.
page="/assets/$asset?view=partitions"
[ "$key" = - ] || page+="&partition=$key"
url="http://flusso-demo:$port$page"

profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
mkdir -p "$(dirname "$out")"
tmp="$profile/shot.png"
echo "screenshot: $base$page -> $out"
if ! timeout 180 chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
        --disable-background-networking --disable-component-update --disable-sync \
        --user-data-dir="$profile" --hide-scrollbars --window-size=1440,900 \
        --host-resolver-rules="MAP flusso-demo 127.0.0.1" --disable-features=HttpsUpgrades \
        --virtual-time-budget="$budget" --screenshot="$tmp" "$url" >"$profile/chromium.log" 2>&1 \
    || [ ! -s "$tmp" ]; then
    echo "screenshot: chromium failed, or wrote no image:" >&2
    tail -n 20 "$profile/chromium.log" >&2
    exit 1
fi
mv "$tmp" "$out"
echo "screenshot: wrote $out ($(stat -c %s "$out") bytes)"
