#!/usr/bin/env bash
# Wall time of `lwa-broker token` with a fresh cached token (the figure: under 20 ms).
# Usage: bash benches/cli_token.sh [RUNS]   (after `cargo build --release -p lwa-broker -p fake-amazon`)
set -euo pipefail
runs=${1:-50}
bin="${CARGO_TARGET_DIR:-$(dirname "$0")/../target}/release"
dir=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$bin/fake-amazon" --listen "127.0.0.1:$port" > "$dir/fake.log" &
fake=$!
trap 'kill $fake; rm -rf "$dir"' EXIT
sleep 0.5
export LWA_BROKER_AMAZON_BASE_URL="http://127.0.0.1:$port" LWA_BROKER_STORE="$dir/tokens.json" LWA_BROKER_KEY_FILE="$dir/master.key"
export AMAZON_CLIENT_ID=$(grep -m1 -o 'amzn1.application-oa2-client.[0-9a-f]*' "$dir/fake.log")
export AMAZON_CLIENT_SECRET=$(grep -m1 -o 'amzn1.oa2-cs.v1.[0-9a-f]*' "$dir/fake.log")
curl -s -X POST "$LWA_BROKER_AMAZON_BASE_URL/__fake/self-authorize" -H 'content-type: application/json' \
  -d "{\"client_id\":\"$AMAZON_CLIENT_ID\",\"selling_partner_id\":\"A1FAKESELLERNA\"}" \
  | grep -o 'Atzr|[^"]*' | "$bin/lwa-broker" set-refresh-token 2>/dev/null
cd "$dir"
for _ in $(seq "$runs"); do
  start=$(date +%s%N); "$bin/lwa-broker" token > /dev/null; end=$(date +%s%N)
  echo $(( (end - start) / 1000 ))
done | sort -n | awk '{a[NR]=$1} END {printf "runs %d  min %.1f ms  median %.1f ms  p90 %.1f ms  max %.1f ms\n", NR, a[1]/1000, a[int((NR+1)/2)]/1000, a[int(NR*0.9)]/1000, a[NR]/1000}'
