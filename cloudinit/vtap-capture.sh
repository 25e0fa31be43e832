#!/usr/bin/env bash
# vtap-capture.sh — the collector's capture of mirrored VXLAN. Installed on the collector VM by
# cloud-init and run unchanged by the local emulator (`ip netns exec NS vtap-capture.sh ...`).
#
#   vtap-capture.sh start --out FILE [--duration S] [--port 4789] [--iface any] [--snaplen N]
#                         [--pidfile FILE | --unit NAME] [--direction in|out|inout]
#                         [--ring-files N --ring-mb M]
#   vtap-capture.sh stop --pidfile FILE | --unit NAME
#
# Two ways to keep the capture running: a detached process group recorded in --pidfile (the
# emulator), or --unit NAME: a transient systemd unit (systemd-run), so the capture outlives
# the SSH session that started it and systemd ends it after --duration (RuntimeMaxSec; SIGTERM,
# tcpdump flushes). The VMs use --unit.
#
# --ring-files N --ring-mb M: a ring buffer for long runs (tcpdump -C M -W N): FILE0, FILE1, ...
# (zero-padded to the width of N-1), each up to M MB (10^6 bytes); once N files are full the
# oldest is overwritten, so the capture never takes more than about N x M MB. The decoder reads
# the ring in rotation order from the prefix: `python -m vtaplab decode FILE`.
# --snaplen N keeps the first N bytes of each packet (default 9216: whole jumbo frames).
#
# Captures UDP to/from the VXLAN port *and every non-first IP fragment*: an outer packet over
# 1500 bytes arrives fragmented, and only its first fragment carries the UDP port, so a plain
# `udp port 4789` filter would keep a fraction of every large inner segment.
# `start` returns once tcpdump is listening (so traffic sent afterwards is captured) and the
# capture ends by itself after --duration seconds (default 600). Running `start` again while the capture of
# the same pidfile runs starts nothing. `stop` ends it (SIGTERM: tcpdump flushes the file).
set -euo pipefail

die() { echo "vtap-capture: $*" >&2; exit 2; }
usage() {
  echo "usage: vtap-capture.sh start --out FILE [--duration S] [--port 4789] [--iface any]" \
    "[--snaplen N] [--pidfile FILE | --unit NAME] [--direction in|out|inout]" \
    "[--ring-files N --ring-mb M]" >&2
  echo "       vtap-capture.sh stop --pidfile FILE | --unit NAME" >&2
  exit 2
}
is_uint() { [[ $1 =~ ^[0-9]{1,9}$ ]]; }
check_unit() {
  [[ $1 =~ ^[A-Za-z0-9_.-]{1,64}$ && $1 != *.service ]] \
    || die "--unit '$1' is not accepted; accepted: 1-64 characters of A-Z a-z 0-9 _ . - (no .service)"
}

# Running and not a zombie: the capture runs detached, so after it exits it stays a zombie until
# init reaps it, which may take a while.
alive() {
  local state
  state=$(awk '/^State:/ {print $2}' "/proc/$1/status" 2>/dev/null) || return 1
  [[ -n $state && $state != Z ]]
}

# The pid in FILE, if it is a capture this script started and it still runs.
running_pid() {
  local pidfile=$1 pid
  [[ -f $pidfile ]] || return 1
  pid=$(head -n 1 "$pidfile")
  is_uint "$pid" || return 1
  alive "$pid" || return 1
  [[ $(tr '\0' ' ' <"/proc/$pid/cmdline") == *tcpdump* ]] || return 1
  echo "$pid"
}

# End the duration watchdog (line 2 of the pidfile; a session leader, so its sleep goes too).
stop_watchdog() {
  local pidfile=$1 watchdog
  watchdog=$(sed -n 2p "$pidfile" 2>/dev/null || true)
  is_uint "${watchdog:-x}" || return 0
  [[ -r /proc/$watchdog/cmdline ]] || return 0
  [[ $(tr '\0' ' ' <"/proc/$watchdog/cmdline") == *sleep* ]] || return 0
  kill -TERM -- "-$watchdog" 2>/dev/null || true
}

cmd_start() {
  # snaplen 9216: whole jumbo frames, yet small ring slots. (libpcap sizes each slot of its
  # ring by the snap length when the NIC has offloads, so 256 KiB would leave 128 slots.)
  local out="" duration=600 port=4789 iface=any snaplen=9216 pidfile="" direction=inout unit=""
  local ring_files="" ring_mb=""
  while (($#)); do
    case $1 in
      --out) out=${2-}; shift 2 || usage ;;
      --duration) duration=${2-}; shift 2 || usage ;;
      --port) port=${2-}; shift 2 || usage ;;
      --iface) iface=${2-}; shift 2 || usage ;;
      --snaplen) snaplen=${2-}; shift 2 || usage ;;
      --pidfile) pidfile=${2-}; shift 2 || usage ;;
      --direction) direction=${2-}; shift 2 || usage ;;
      --unit) unit=${2-}; shift 2 || usage ;;
      --ring-files) ring_files=${2-}; shift 2 || usage ;;
      --ring-mb) ring_mb=${2-}; shift 2 || usage ;;
      *) die "unknown option '$1'; accepted: --out --duration --port --iface --snaplen --pidfile --unit --direction --ring-files --ring-mb" ;;
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
  local -a ring=()
  local target=$out
  if [[ -n $ring_files || -n $ring_mb ]]; then
    [[ -n $ring_files && -n $ring_mb ]] \
      || die "--ring-files and --ring-mb go together; accepted: both (a ring of N files of M MB) or neither"
    { is_uint "$ring_files" && ((10#$ring_files >= 2 && 10#$ring_files <= 10000)); } \
      || die "--ring-files '$ring_files' is not accepted; accepted: 2..10000"
    { is_uint "$ring_mb" && ((10#$ring_mb >= 1 && 10#$ring_mb <= 100000)); } \
      || die "--ring-mb '$ring_mb' is not accepted; accepted: 1..100000 (MB of 10^6 bytes)"
    ring=(-C "$((10#$ring_mb))" -W "$((10#$ring_files))")
    target="$out ring (${out}0.., $((10#$ring_files)) files x $((10#$ring_mb)) MB)"
  fi
  if [[ -n $unit ]]; then
    [[ -z $pidfile ]] || die "--unit and --pidfile are not accepted together; accepted: one of them"
    check_unit "$unit"
    start_unit "$unit" "$out" "$duration" "$port" "$iface" "$snaplen" "$direction" "$target" \
      "${ring[@]}"
    return
  fi
  [[ -n $pidfile ]] || pidfile="$out.pid"

  local pid
  if pid=$(running_pid "$pidfile"); then
    echo "vtap-capture: already running (pid $pid, $pidfile)"
    return 0
  fi

  local errlog="$out.log"
  local filter="udp port $((10#$port)) or (ip[6:2] & 0x1fff != 0)"
  # --immediate-mode: hand every packet over at once (else a stop loses the last ring-buffer
  # block); no -U: buffered writes (a write per packet costs drops under load; tcpdump
  # flushes on SIGTERM); -B: a 32 MiB ring, so bursts (a 200 kB download mirrored at memory
  # speed) are not dropped; -Z root: keep writing where root put the file.
  # setsid: a Ctrl-C in the caller's terminal must not end the capture behind its back.
  setsid tcpdump -n --immediate-mode -B 32768 -Z root -i "$iface" -Q "$direction" \
    -s "$((10#$snaplen))" "${ring[@]}" -w "$out" "$filter" </dev/null >"$errlog" 2>&1 &
  pid=$!
  # The watchdog ends the capture after --duration (SIGTERM: tcpdump flushes and closes).
  # shellcheck disable=SC2016  # $1/$2 belong to the inner bash
  setsid bash -c 'sleep "$1"; [[ $(tr "\0" " " <"/proc/$2/cmdline") == *tcpdump* ]] && kill -TERM "$2"' \
    _ "$((10#$duration))" "$pid" </dev/null >/dev/null 2>&1 &
  printf '%s\n%s\n' "$pid" "$!" >"$pidfile"
  # Wait (bounded: 10 s) until tcpdump says it listens.
  local i
  for ((i = 0; i < 200; i++)); do
    if grep -q 'listening on' "$errlog" 2>/dev/null; then
      echo "vtap-capture: capturing on $iface to $target for ${duration}s (pid $pid)"
      return 0
    fi
    if ! alive "$pid"; then
      stop_watchdog "$pidfile"
      rm -f "$pidfile"
      die "tcpdump exited at start: $(tr '\n' ' ' <"$errlog")"
    fi
    sleep 0.05
  done
  stop_watchdog "$pidfile"
  kill -TERM "$pid" 2>/dev/null || true
  rm -f "$pidfile"
  die "tcpdump did not start listening within 10 s: $(tr '\n' ' ' <"$errlog")"
}

# The same tcpdump as a transient systemd unit; same readiness wait, same messages.
# Arguments after the 8th are the ring options for tcpdump (-C M -W N), if any.
start_unit() {
  local unit=$1 out=$2 duration=$3 port=$4 iface=$5 snaplen=$6 direction=$7 target=$8
  shift 8
  if systemctl is-active --quiet -- "$unit"; then
    echo "vtap-capture: already running (unit $unit)"
    return 0
  fi
  # A failed unit of the same name (an earlier run that hit an error) would block systemd-run.
  systemctl reset-failed -- "$unit" >/dev/null 2>&1 || true
  local errlog="$out.log"
  : >"$errlog"
  local filter="udp port $((10#$port)) or (ip[6:2] & 0x1fff != 0)"
  # --collect: the unit is gone once it ends, even after RuntimeMaxSec (a "timeout" failure).
  systemd-run --quiet --collect --unit "$unit" \
    -p "RuntimeMaxSec=$((10#$duration))" -p "StandardError=file:$errlog" \
    -p "StandardOutput=file:$errlog" -- \
    tcpdump -n --immediate-mode -B 32768 -Z root -i "$iface" -Q "$direction" \
    -s "$((10#$snaplen))" "$@" -w "$out" "$filter" \
    || die "systemd-run could not start unit $unit"
  local i
  for ((i = 0; i < 200; i++)); do
    if grep -q 'listening on' "$errlog" 2>/dev/null; then
      echo "vtap-capture: capturing on $iface to $target for ${duration}s (unit $unit)"
      return 0
    fi
    if ! systemctl is-active --quiet -- "$unit"; then
      die "tcpdump exited at start (unit $unit): $(tr '\n' ' ' <"$errlog")"
    fi
    sleep 0.05
  done
  systemctl stop -- "$unit" >/dev/null 2>&1 || true
  die "tcpdump did not start listening within 10 s (unit $unit): $(tr '\n' ' ' <"$errlog")"
}

stop_unit() {
  local unit=$1
  check_unit "$unit"
  if ! systemctl is-active --quiet -- "$unit"; then
    systemctl reset-failed -- "$unit" >/dev/null 2>&1 || true
    echo "vtap-capture: not running (unit $unit)"
    return 0
  fi
  # systemd sends SIGTERM (tcpdump flushes and closes the file) and waits for the exit.
  systemctl stop -- "$unit" || die "systemctl stop $unit failed"
  echo "vtap-capture: stopped (unit $unit)"
}

cmd_stop() {
  local pidfile="" unit=""
  while (($#)); do
    case $1 in
      --pidfile) pidfile=${2-}; shift 2 || usage ;;
      --unit) unit=${2-}; shift 2 || usage ;;
      *) die "unknown option '$1'; accepted: --pidfile --unit" ;;
    esac
  done
  if [[ -n $unit ]]; then
    [[ -z $pidfile ]] || die "--unit and --pidfile are not accepted together; accepted: one of them"
    stop_unit "$unit"
    return
  fi
  [[ -n $pidfile ]] || die "--pidfile FILE is required (the one given to start), or --unit NAME"
  local pid i
  stop_watchdog "$pidfile"
  if ! pid=$(running_pid "$pidfile"); then
    rm -f "$pidfile"
    echo "vtap-capture: not running ($pidfile)"
    return 0
  fi
  # SIGTERM: tcpdump flushes and closes the file. (Not SIGINT: shells start background
  # commands with SIGINT ignored.)
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    alive "$pid" || break
    sleep 0.02
  done
  if alive "$pid"; then
    kill -KILL "$pid" 2>/dev/null || true
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
