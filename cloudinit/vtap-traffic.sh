#!/usr/bin/env bash
# vtap-traffic.sh — the traffic the vTAP should mirror: N HTTP/1.1 requests (one TCP connection
# each) to one or more URLs, logged. Installed on the client VM by cloud-init and run unchanged
# by the local emulator (`ip netns exec NS vtap-traffic.sh ...`).
#
#   vtap-traffic.sh --url URL [--url URL2 ...] --count N --log FILE [--timeout S]
#
# Each of the N rounds fetches every --url once, in order. The log (TSV) is rewritten:
#   # vtap-traffic v1
#   n<TAB>url<TAB>http_status<TAB>bytes<TAB>seconds      (status 000 when the request failed)
# Exit status: 0 when every request got a 2xx, 1 when some did not, 2 on bad input.
set -euo pipefail

die() { echo "vtap-traffic: $*" >&2; exit 2; }
usage() {
  echo "usage: vtap-traffic.sh --url URL [--url URL ...] --count N --log FILE [--timeout S]" >&2
  exit 2
}

urls=()
count=""
log=""
timeout=10
while (($#)); do
  case $1 in
    --url) urls+=("${2-}"); shift 2 || usage ;;
    --count) count=${2-}; shift 2 || usage ;;
    --log) log=${2-}; shift 2 || usage ;;
    --timeout) timeout=${2-}; shift 2 || usage ;;
    -h|--help) usage ;;
    *) die "unknown option '$1'; accepted: --url --count --log --timeout" ;;
  esac
done
((${#urls[@]})) || die "--url URL is required (e.g. http://10.30.1.4/)"
for url in "${urls[@]}"; do
  [[ $url =~ ^https?://[^[:space:]]+$ ]] || die "--url '$url' is not accepted; accepted: http:// or https:// URLs"
done
if ! [[ $count =~ ^[0-9]{1,6}$ ]] || ((10#$count < 1 || 10#$count > 100000)); then
  die "--count '$count' is not accepted; accepted: 1..100000"
fi
[[ -n $log ]] || die "--log FILE is required"
[[ -d $(dirname "$log") ]] || die "--log '$log': directory $(dirname "$log") does not exist"
if ! [[ $timeout =~ ^[0-9]{1,4}$ ]] || ((10#$timeout < 1)); then
  die "--timeout '$timeout' is not accepted; accepted: whole seconds >= 1"
fi
command -v curl >/dev/null || die "curl is not installed"

printf '# vtap-traffic v1\n' >"$log"
n=0
failed=0
for ((round = 1; round <= 10#$count; round++)); do
  for url in "${urls[@]}"; do
    n=$((n + 1))
    # --http1.1: the decoder reads HTTP/1.1 lines; curl prints 000 when there was no answer.
    if ! result=$(curl --http1.1 -sS -o /dev/null --max-time "$timeout" \
        -w '%{http_code}\t%{size_download}\t%{time_total}' "$url" 2>/dev/null); then
      result=${result:-000$'\t'0$'\t'0}
    fi
    status=${result%%$'\t'*}
    [[ $status == 2* ]] || failed=$((failed + 1))
    printf '%d\t%s\t%s\n' "$n" "$url" "$result" >>"$log"
  done
done
echo "vtap-traffic: $n requests, $((n - failed)) ok, $failed failed; log $log"
((failed == 0))
