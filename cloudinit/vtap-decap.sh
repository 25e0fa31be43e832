#!/usr/bin/env bash
# vtap-decap.sh — on the collector, one VXLAN decap interface per tenant VNI, so an IDS (Zeek,
# Suricata) or tcpdump sees each tenant's inner traffic on an interface of its own. msp's
# tenants share one PLS (one NAT source address) and one address plan: the VNI their proxy
# stamps is what tells them apart, and this turns it into an interface name. The capture of
# the outer VXLAN (vtap-capture.sh) is unaffected: it reads the NIC, before decapsulation.
# Installed on the collector VM by cloud-init and run unchanged by the local emulator
# (`ip netns exec NS vtap-decap.sh ...`).
#
#   vtap-decap.sh apply  --vni N[,N...] [--port 4789] [--prefix vtap]
#   vtap-decap.sh remove [--prefix vtap]
#   vtap-decap.sh status [--prefix vtap]   (one line per interface: name vni rx_packets;
#                                           exit 0 when there is one, 1 when none)
#
# Interface PREFIX+VNI (e.g. vtap1001) is a Linux VXLAN device with that VNI on UDP PORT, no
# remote, no learning: it only receives. Every such device shares the kernel's one UDP socket
# on PORT, which demultiplexes by VNI; a VNI without a device is dropped there (and no ICMP
# port-unreachable goes back any more). Fragmented VXLAN is reassembled before it.
# Idempotent: `apply` makes the set of PREFIX* VXLAN devices exactly the VNIs given (it
# deletes the others); `remove` deletes them all. Nothing but PREFIX<digits> VXLAN devices is
# ever touched.
set -euo pipefail

die() { echo "vtap-decap: $*" >&2; exit 2; }
usage() {
  echo "usage: vtap-decap.sh apply --vni N[,N...] [--port 4789] [--prefix vtap]" >&2
  echo "       vtap-decap.sh remove|status [--prefix vtap]" >&2
  exit 2
}

readonly VNI_MAX=16777215
readonly IFNAME_MAX=15

# Our devices: VXLAN devices named PREFIX<digits>.
ours() {
  local prefix=$1 name
  while read -r name; do
    [[ $name =~ ^${prefix}[0-9]+$ ]] && echo "$name"
  done < <(ip -o link show type vxlan | awk -F': ' '{print $2}' | cut -d@ -f1 | sort -V)
  return 0
}

cmd=${1-}
[[ -n $cmd ]] || usage
shift
vnis=""
port=4789
prefix=vtap
while (($#)); do
  case $1 in
    --vni) vnis=${2-}; shift 2 || usage ;;
    --port) port=${2-}; shift 2 || usage ;;
    --prefix) prefix=${2-}; shift 2 || usage ;;
    -h|--help) usage ;;
    *) die "unknown option '$1'; accepted: --vni --port --prefix" ;;
  esac
done
[[ $prefix =~ ^[a-z][a-z0-9]{0,6}$ ]] \
  || die "--prefix '$prefix' is not accepted; accepted: a lowercase letter, then up to 6 letters/digits"
if ! [[ $port =~ ^[0-9]{1,5}$ ]] || ((10#$port < 1 || 10#$port > 65535)); then
  die "--port '$port' is not accepted; accepted: 1..65535"
fi

case $cmd in
  apply)
    [[ -n $vnis ]] || die "apply needs --vni N[,N...]"
    declare -A wanted=()
    IFS=, read -r -a list <<<"$vnis"
    for vni in "${list[@]}"; do
      if ! [[ $vni =~ ^[0-9]{1,8}$ ]] || ((10#$vni > VNI_MAX)); then
        die "--vni '$vni' is not accepted; accepted: 0..$VNI_MAX, comma-separated"
      fi
      name="$prefix$((10#$vni))"
      ((${#name} <= IFNAME_MAX)) || die "interface name '$name' is longer than $IFNAME_MAX"
      wanted[$name]=$((10#$vni))
    done
    # Drop what an earlier apply made that is not wanted now (or has another port).
    while read -r name; do
      [[ -z $name ]] && continue
      details=$(ip -d -o link show dev "$name")
      if [[ -z ${wanted[$name]+x} || $details != *" dstport $port "* ]]; then
        ip link del dev "$name"
      fi
    done < <(ours "$prefix")
    for name in "${!wanted[@]}"; do
      if ! ip link show dev "$name" >/dev/null 2>&1; then
        ip link add "$name" type vxlan id "${wanted[$name]}" dstport "$port" nolearning
      fi
      # No IPv6 chatter on a receive-only device; up.
      sysctl -qw "net.ipv6.conf.$name.disable_ipv6=1" 2>/dev/null || true
      ip link set dev "$name" up
    done
    ;;
  remove)
    while read -r name; do
      [[ -n $name ]] && ip link del dev "$name"
    done < <(ours "$prefix")
    ;;
  status)
    found=1
    while read -r name; do
      [[ -z $name ]] && continue
      vni=$(ip -d -o link show dev "$name" | sed -n 's/.* vxlan id \([0-9]*\).*/\1/p')
      rx=$(cat "/sys/class/net/$name/statistics/rx_packets")
      echo "$name $vni $rx"
      found=0
    done < <(ours "$prefix")
    exit "$found"
    ;;
  *) usage ;;
esac
