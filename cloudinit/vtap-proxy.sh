#!/usr/bin/env bash
# vtap-proxy.sh — the vTAP proxy's rewrite: VXLAN (UDP/4789) that arrives at this host is sent
# on to the Private Endpoint's IP, so the vTAP (which may only point at a NIC or an ILB) can
# reach a Private Link Service. Installed on the proxy VM by cloud-init and run unchanged by
# the local emulator (`ip netns exec NS vtap-proxy.sh ...`).
#
#   vtap-proxy.sh apply  --mode netdev|stateless|conntrack --target PE_IP [--port 4789] [--vni N]
#   vtap-proxy.sh remove [--port 4789]
#   vtap-proxy.sh status            (exit 0 when a rewrite is applied, 1 when none is)
#
# Modes (fastest first; `python -m vtaplab bench proxy` measures them against plain routing):
#   netdev     nftables netdev-family ingress hook on every interface with an IPv4 address:
#              the destination is rewritten as the packet comes off the driver and the packet
#              is sent straight out (`fwd`) to the next hop that the route to the target had
#              at `apply` time - before defragmentation, connection tracking, routing and
#              any host firewall, so nothing is tracked and every fragment is forwarded as it
#              came (the non-first fragments, which carry no UDP header, are matched by their
#              fragment offset as in stateless, with the same limitation). TTL is decremented.
#              "Addressed to this host" means the host's IPv4 addresses at `apply` time, and
#              the next hop is the one routing had then: run `apply` again if either changes.
#   conntrack  iptables DNAT, as the reference lab does. Connection tracking reassembles IP
#              fragments before NAT and the forward path re-fragments, so every fragment of a
#              >1500-byte outer packet is forwarded.
#   stateless  nftables, no connection tracking (notrack + `ip daddr set`). A rule on the UDP
#              port only sees whole datagrams and first fragments (later fragments carry no
#              UDP header), so a second rule rewrites the non-first UDP fragments addressed to
#              this host too. Limitation: it cannot tell which datagram such a fragment
#              belongs to, so any fragmented UDP sent *to this host* is forwarded as well.
#   --vni N    stamps VXLAN VNI N on every forwarded packet (stateless, nftables; the UDP
#              checksum is set to 0, which IPv4 allows), so a collector behind one PLS can tell
#              tenants apart.
#
# Idempotent: `apply` replaces whatever an earlier `apply` (in any mode) installed, in one
# nftables transaction / one dedicated iptables chain; `remove` deletes all of it and the conntrack
# entries of the port (so a removed rule stops forwarding at once, also for flows conntrack
# already knows). Forwarding, rp_filter=0 and send_redirects=0 stay set after `remove`.
set -euo pipefail

readonly NFT_TABLE=vtaplab_proxy
readonly IPT_CHAIN=VTAPLAB_PROXY

die() { echo "vtap-proxy: $*" >&2; exit 2; }
usage() {
  echo "usage: vtap-proxy.sh apply --mode netdev|stateless|conntrack --target PE_IP [--port 4789] [--vni N]" >&2
  echo "       vtap-proxy.sh remove [--port 4789] | status" >&2
  exit 2
}

is_ipv4() {
  local ip=$1 part
  [[ $ip =~ ^([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})$ ]] || return 1
  for part in "${BASH_REMATCH[@]:1}"; do ((10#$part <= 255)) || return 1; done
}
is_uint() { [[ $1 =~ ^[0-9]{1,8}$ ]]; }

# Kernel settings a router needs: forward, accept packets whose source is "behind" another
# interface (rp_filter; the effective value is the max of all/<iface>), and never tell the
# sender to go to the PE directly (the proxy forwards out of the interface it received on,
# which is exactly when the kernel would send an ICMP redirect; effective = all OR <iface>).
set_sysctls() {
  local conf
  echo 1 >/proc/sys/net/ipv4/ip_forward
  for conf in /proc/sys/net/ipv4/conf/*/; do
    echo 0 >"${conf}rp_filter"
    echo 0 >"${conf}send_redirects"
  done
}

remove_iptables() {
  command -v iptables >/dev/null || return 0
  while iptables -t nat -C PREROUTING -j "$IPT_CHAIN" 2>/dev/null; do
    iptables -t nat -D PREROUTING -j "$IPT_CHAIN"
  done
  if iptables -t nat -S "$IPT_CHAIN" >/dev/null 2>&1; then
    iptables -t nat -F "$IPT_CHAIN"
    iptables -t nat -X "$IPT_CHAIN"
  fi
}

remove_nft() {
  command -v nft >/dev/null || return 0
  local family
  for family in ip netdev; do
    if nft list table "$family" "$NFT_TABLE" >/dev/null 2>&1; then
      nft delete table "$family" "$NFT_TABLE"
    fi
  done
}

flush_conntrack() {
  local port=$1
  command -v conntrack >/dev/null || return 0
  conntrack -D -p udp --orig-port-dst "$port" >/dev/null 2>&1 || true
}

# The VNI stamp: VXLAN header = UDP payload; VNI = bits 32..55 of it, i.e. @th,96,24.
vni_statement() {
  local vni=$1
  [[ -n $vni ]] || return 0
  printf '@th,96,24 set %s udp checksum set 0 ' "$vni"
}

# Table FAMILY $NFT_TABLE becomes the chains read from stdin, in one transaction: declare (so
# delete cannot fail), delete, define. Re-applying replaces the rules instead of adding to them.
replace_nft_table() {
  local family=$1
  {
    printf 'table %s %s\ndelete table %s %s\n' "$family" "$NFT_TABLE" "$family" "$NFT_TABLE"
    printf 'table %s %s {\n' "$family" "$NFT_TABLE"
    cat
    printf '}\n'
  } | nft -f -
}

apply_stateless() {
  local target=$1 port=$2 vni=$3 stamp
  stamp=$(vni_statement "$vni")
  replace_nft_table ip <<EOF
  chain prerouting {
    type filter hook prerouting priority raw; policy accept;
    fib daddr type local udp dport $port ${stamp}notrack ip daddr set $target counter accept comment "vxlan: whole datagrams and first fragments"
    fib daddr type local ip protocol udp ip frag-off & 0x1fff != 0 notrack ip daddr set $target counter accept comment "vxlan: non-first fragments carry no UDP port"
  }
EOF
}

# Line 1: the interfaces that hold an IPv4 address (not lo), quoted for nft ("eth0", "eth1");
# line 2: those addresses (10.0.0.4, 10.0.1.4). For the netdev mode.
local_devices_and_addresses() {
  local dev cidr devs="" addrs=""
  while read -r dev cidr; do
    dev=${dev%%@*}
    [[ $dev == lo ]] && continue
    [[ $devs == *"\"$dev\""* ]] || devs+="${devs:+, }\"$dev\""
    addrs+="${addrs:+, }${cidr%/*}"
  done < <(ip -4 -o addr show | awk '{print $2, $4}')
  [[ -n $devs ]] || die "netdev mode: no interface (other than lo) has an IPv4 address to hook"
  printf '%s\n%s\n' "$devs" "$addrs"
}

# "via GW dev DEV" or "dev DEV" (on-link): how the kernel routes to the target now.
route_to() {
  local target=$1 route
  route=$(ip -4 -o route get "$target" 2>/dev/null) \
    || die "netdev mode: no route to --target $target"
  [[ $route != local* && $route != *" dev lo "* ]] \
    || die "netdev mode: --target $target is an address of this host"
  awk '{ for (i = 1; i < NF; i++) if ($i == "via" || $i == "dev") printf "%s %s ", $i, $(i + 1) }' \
    <<<"$route"
}

apply_netdev() {
  local target=$1 port=$2 vni=$3 stamp found devs addrs route nexthop outdev
  stamp=$(vni_statement "$vni")
  found=$(local_devices_and_addresses)
  devs=$(sed -n 1p <<<"$found")
  addrs=$(sed -n 2p <<<"$found")
  route=$(route_to "$target")
  nexthop=$target
  [[ $route =~ via\ ([0-9.]+) ]] && nexthop=${BASH_REMATCH[1]}
  [[ $route =~ dev\ ([^ ]+) ]] || die "netdev mode: no output interface in the route to $target"
  outdev=${BASH_REMATCH[1]}
  # fwd: out of OUTDEV to the next hop the route names (neighbour resolution as usual, TTL
  # decremented); the packet never enters the IP stack of this host.
  replace_nft_table netdev <<EOF
  chain ingress {
    type filter hook ingress devices = { $devs } priority filter; policy accept;
    ip daddr { $addrs } udp dport $port ${stamp}ip daddr set $target fwd ip to $nexthop device "$outdev" comment "vxlan: whole datagrams and first fragments"
    ip daddr { $addrs } ip frag-off & 0x1fff != 0 ip daddr set $target fwd ip to $nexthop device "$outdev" comment "vxlan: non-first fragments carry no UDP port"
  }
EOF
}

apply_conntrack() {
  local target=$1 port=$2 vni=$3 stamp
  iptables -t nat -N "$IPT_CHAIN" 2>/dev/null || iptables -t nat -F "$IPT_CHAIN"
  iptables -t nat -A "$IPT_CHAIN" -p udp --dport "$port" -m addrtype --dst-type LOCAL \
    -j DNAT --to-destination "$target"
  iptables -t nat -C PREROUTING -j "$IPT_CHAIN" 2>/dev/null \
    || iptables -t nat -A PREROUTING -j "$IPT_CHAIN"
  if [[ -n $vni ]]; then
    # After defragmentation and conntrack (-200), before DNAT (-100): whole datagrams.
    stamp=$(vni_statement "$vni")
    replace_nft_table ip <<EOF
  chain prerouting {
    type filter hook prerouting priority -150; policy accept;
    fib daddr type local udp dport $port ${stamp}counter comment "vxlan: stamp VNI"
  }
EOF
  fi
}

cmd_apply() {
  local mode="" target="" port=4789 vni=""
  while (($#)); do
    case $1 in
      --mode) mode=${2-}; shift 2 || usage ;;
      --target) target=${2-}; shift 2 || usage ;;
      --port) port=${2-}; shift 2 || usage ;;
      --vni) vni=${2-}; shift 2 || usage ;;
      *) die "unknown option '$1'; accepted: --mode --target --port --vni" ;;
    esac
  done
  [[ $mode == netdev || $mode == stateless || $mode == conntrack ]] \
    || die "--mode '$mode' is not accepted; accepted: netdev, stateless, conntrack"
  is_ipv4 "$target" || die "--target '$target' is not an IPv4 address (the PE IP, e.g. 10.30.3.4)"
  { is_uint "$port" && ((10#$port >= 1 && 10#$port <= 65535)); } \
    || die "--port '$port' is not accepted; accepted: 1..65535"
  if [[ -n $vni ]]; then
    { is_uint "$vni" && ((10#$vni <= 16777215)); } \
      || die "--vni '$vni' is not accepted; accepted: 0..16777215"
    vni=$((10#$vni))
  fi
  port=$((10#$port))

  set_sysctls
  # Replace whatever was there, in either mode.
  remove_iptables
  remove_nft
  if [[ $mode == netdev ]]; then
    apply_netdev "$target" "$port" "$vni"
  elif [[ $mode == stateless ]]; then
    apply_stateless "$target" "$port" "$vni"
  else
    apply_conntrack "$target" "$port" "$vni"
  fi
  flush_conntrack "$port"
  echo "vtap-proxy: applied mode=$mode target=$target port=$port vni=${vni:-unchanged}"
}

cmd_remove() {
  local port=4789
  while (($#)); do
    case $1 in
      --port) port=${2-}; shift 2 || usage ;;
      *) die "unknown option '$1'; accepted: --port" ;;
    esac
  done
  { is_uint "$port" && ((10#$port >= 1 && 10#$port <= 65535)); } \
    || die "--port '$port' is not accepted; accepted: 1..65535"
  remove_iptables
  remove_nft
  flush_conntrack "$((10#$port))"
  echo "vtap-proxy: removed"
}

cmd_status() {
  (($# == 0)) || die "status takes no options, got '$*'"
  local applied=1
  echo "ip_forward=$(cat /proc/sys/net/ipv4/ip_forward)" \
    "rp_filter(all)=$(cat /proc/sys/net/ipv4/conf/all/rp_filter)" \
    "send_redirects(all)=$(cat /proc/sys/net/ipv4/conf/all/send_redirects)"
  # Listings are read whole first: `cmd | grep -q` fails under pipefail when grep quits early.
  local listing
  if command -v iptables >/dev/null \
      && listing=$(iptables -t nat -S "$IPT_CHAIN" 2>/dev/null) && [[ $listing == *"-j DNAT"* ]]; then
    echo "mode=conntrack"
    echo "$listing"
    applied=0
  fi
  if command -v nft >/dev/null && listing=$(nft list table netdev "$NFT_TABLE" 2>/dev/null); then
    if [[ $listing == *"daddr set"* ]]; then
      echo "mode=netdev"
      applied=0
    fi
    echo "$listing"
  fi
  if command -v nft >/dev/null && listing=$(nft list table ip "$NFT_TABLE" 2>/dev/null); then
    if [[ $listing == *"daddr set"* ]]; then
      echo "mode=stateless"
      applied=0
    fi
    echo "$listing"
  fi
  ((applied == 0)) || echo "no rewrite applied"
  return "$applied"
}

(($# >= 1)) || usage
[[ $(id -u) -eq 0 ]] || die "must run as root (it sets sysctls and firewall rules)"
action=$1
shift
case $action in
  apply) cmd_apply "$@" ;;
  remove) cmd_remove "$@" ;;
  status) cmd_status "$@" ;;
  -h|--help) usage ;;
  *) die "unknown action '$action'; accepted: apply, remove, status" ;;
esac
