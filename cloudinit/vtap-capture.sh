#!/usr/bin/env bash
# vtap-capture.sh — the collector's capture of mirrored VXLAN. Installed on the collector VM by
# cloud-init and run unchanged by the local emulator (`ip netns exec NS vtap-capture.sh ...`).
#
#   vtap-capture.sh start --out FILE [--duration S] [--port 4789] [--iface any] [--snaplen N]
#                         [--pidfile FILE] [--direction in|out|inout]
#   vtap-capture.sh stop --pidfile FILE
#
# Captures UDP to/from the VXLAN port *and every non-first IP fragment*: an outer packet over
# 1500 bytes arrives fragmented, and only its first fragment carries the UDP port, so a plain
# `udp port 4789` filter would keep a fraction of every large inner segment.
# `start` returns once tcpdump is listening (so traffic sent afterwards is captured) and the
# capture ends by itself after --duration seconds. Running `start` again while the capture of
# the same pidfile runs starts nothing. `stop` ends it (SIGINT: tcpdump flushes the file).
set -euo pipefail

die() { echo "vtap-capture: $*" >&2; exit 2; }
usage() {
  echo "usage: vtap-capture.sh start --out FILE [--duration S] [--port 4789] [--iface any]" \
    "[--snaplen N] [--pidfile FILE] [--direction in|out|inout]" >&2
  echo "       vtap-capture.sh stop --pidfile FILE" >&2
  exit 2
}
is_uint() { [[ $1 =~ ^[0-9]{1,9}$ ]]; }

# The pid in FILE, if it is a capture this script started and it still runs.
running_pid() {
  local pidfile=$1 pid
  [[ -f $pidfile ]] || return 1
  pid=$(<"$pidfile")
  is_uint "$pid" || return 1
  [[ -r /proc/$pid/cmdline ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q 'tcpdump' || return 1
  echo "$pid"
}

cmd_start() {
  local out="" duration=600 port=4789 iface=any snaplen=262144 pidfile="" direction=inout
  while (($#)); do
    case $1 in
      --out) out=${2-}; shift 2 || usage ;;
      --duration) duration=${2-}; shift 2 || usage ;;
      --port) port=${2-}; shift 2 || usage ;;
      --iface) iface=${2-}; shift 2 || usage ;;
      --snaplen) snaplen=${2-}; shift 2 || usage ;;
      --pidfile) pidfile=${2-}; shift 2 || usage ;;
      --direction) direction=${2-}; shift 2 || usage ;;
      *) die "unknown option '$1'; accepted: --out --duration --port --iface --snaplen --pidfile --direction" ;;
    esac
  done
  [[ -n $out ]] || die "--out FILE is required (where the pcap goes)"
  [[ -d $(dirname "$out") ]] || die "--out '$out': directory $(dirname "$out") does not exist"
  { is_uint "$duration" && ((10#$duration >= 1)); } \
    || die "--duration '$duration' is not accepted; accepted: whole seconds >= 1"
  { is_uint "$port" && ((10#$port >= 1 && 10#$port <= 65535)); } \
    || die "--port '$port' is not accepted; accepted: 1..65535"
  { is_uint "$snaplen" && ((10#$snaplen >= 64)); } \
    || die "--snaplen '$snaplen' is not accepted; accepted: 64 or more"
  [[ $iface =~ ^[A-Za-z0-9_.:@-]{1,15}$ ]] || die "--iface '$iface' is not an interface name"
  case $direction in in|out|inout) ;; *)
    die "--direction '$direction' is not accepted; accepted: in, out, inout" ;;
  esac
  [[ -n $pidfile ]] || pidfile="$out.pid"

  local pid
  if pid=$(running_pid "$pidfile"); then
    echo "vtap-capture: already running (pid $pid, $pidfile)"
    return 0
  fi

  local errlog="$out.log"
  local filter="udp port $((10#$port)) or (ip[6:2] & 0x1fff != 0)"
  # -U, --immediate-mode: hand over and write every packet at once (else a stop loses the
  # last ring-buffer block); -Z root: keep writing where root put the file;
  # timeout ends it after --duration (SIGINT, so tcpdump flushes and closes the file).
  setsid timeout -s INT "$((10#$duration))" \
    tcpdump -n -U --immediate-mode -Z root -i "$iface" -Q "$direction" -s "$((10#$snaplen))" -w "$out" \
    "$filter" </dev/null >"$errlog" 2>&1 &
  pid=$!
  echo "$pid" >"$pidfile"
  # Wait (bounded: 10 s) until tcpdump says it listens.
  local i
  for ((i = 0; i < 200; i++)); do
    if grep -q 'listening on' "$errlog" 2>/dev/null; then
      echo "vtap-capture: capturing on $iface to $out for ${duration}s (pid $pid)"
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$pidfile"
      die "tcpdump exited at start: $(tr '\n' ' ' <"$errlog")"
    fi
    sleep 0.05
  done
  kill -INT "$pid" 2>/dev/null || true
  rm -f "$pidfile"
  die "tcpdump did not start listening within 10 s: $(tr '\n' ' ' <"$errlog")"
}

cmd_stop() {
  local pidfile=""
  while (($#)); do
    case $1 in
      --pidfile) pidfile=${2-}; shift 2 || usage ;;
      *) die "unknown option '$1'; accepted: --pidfile" ;;
    esac
  done
  [[ -n $pidfile ]] || die "--pidfile FILE is required (the one given to start)"
  local pid i
  if ! pid=$(running_pid "$pidfile"); then
    rm -f "$pidfile"
    echo "vtap-capture: not running ($pidfile)"
    return 0
  fi
  # timeout(1) passes SIGINT on to tcpdump, which flushes and exits.
  kill -INT "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  if kill -0 "$pid" 2>/dev/null; then
    # start made it a session (and group) leader: this reaches tcpdump as well.
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
  echo "vtap-capture: stopped (pid $pid)"
}

(($# >= 1)) || usage
action=$1
shift
case $action in
  start) cmd_start "$@" ;;
  stop) cmd_stop "$@" ;;
  -h|--help) usage ;;
  *) die "unknown action '$action'; accepted: start, stop" ;;
esac
