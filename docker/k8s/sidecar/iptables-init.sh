#!/bin/sh
# Makes the Portcullis sidecar the only way out of its pod. Run once by an init container (root,
# capabilities NET_ADMIN and NET_RAW) before the proxy and the agent start. A NetworkPolicy cannot
# tell the containers of one pod apart, but the kernel knows which user owns each socket:
#
#   - the proxy's UID may open connections anywhere: it resolves names and dials checked addresses;
#   - every other UID (the agent, root in any container) may open a connection only to the proxy
#     port on loopback (127.0.0.1 / ::1): no DNS, no other loopback port, no pod or cluster network;
#   - packets of connections that already exist pass, so inbound traffic (probes, a UI the agent
#     serves) still gets its replies. What may reach the pod at all is the NetworkPolicy's job.
#
# Environment:
#   PROXY_UID   numeric UID the proxy container runs as (required; the image uses 10001)
#   PROXY_PORT  the proxy's port on loopback (default 3128)
#   AGENT_UID   optional; refused when equal to PROXY_UID (that would let the agent out)
#   IPTABLES, IP6TABLES  binaries (default iptables, ip6tables; set iptables-legacy and
#               ip6tables-legacy on nodes whose kernel has no nf_tables)
#   CHAIN       chain name (default PORTCULLIS-EGRESS)
#
# Idempotent: a second run replaces the chain's rules. Fails (and so keeps the pod from starting)
# when a rule cannot be installed: there is no fail-open path.
set -eu

PROXY_PORT="${PROXY_PORT:-3128}"
IPTABLES="${IPTABLES:-iptables}"
IP6TABLES="${IP6TABLES:-ip6tables}"
CHAIN="${CHAIN:-PORTCULLIS-EGRESS}"

die() {
  echo "iptables-init: $*" >&2
  exit 1
}

is_uint() {
  case "$1" in
    '' | *[!0-9]*) return 1 ;;
    *) return 0 ;;
  esac
}

[ -n "${PROXY_UID:-}" ] || die "PROXY_UID is required (the proxy container's runAsUser)"
is_uint "$PROXY_UID" || die "PROXY_UID must be a number, got '$PROXY_UID'"
if ! is_uint "$PROXY_PORT" || [ "$PROXY_PORT" -lt 1 ] || [ "$PROXY_PORT" -gt 65535 ]; then
  die "PROXY_PORT must be 1-65535, got '$PROXY_PORT'"
fi
if [ -n "${AGENT_UID:-}" ]; then
  is_uint "$AGENT_UID" || die "AGENT_UID must be a number, got '$AGENT_UID'"
  [ "$AGENT_UID" != "$PROXY_UID" ] || die "AGENT_UID equals PROXY_UID ($PROXY_UID): the agent would bypass the proxy"
fi
[ "$PROXY_UID" != 0 ] || die "PROXY_UID 0 would exempt every root process; run the proxy as its own user"

# install_chain TOOL LOOPBACK: the chain for one address family, hooked first into OUTPUT.
install_chain() {
  tool=$1
  loopback=$2
  command -v "$tool" >/dev/null 2>&1 || die "$tool not found"
  if ! "$tool" -w -N "$CHAIN" 2>/dev/null; then
    "$tool" -w -F "$CHAIN"
  fi
  # Existing connections first: replies to inbound connections are owned by whoever accepted them.
  "$tool" -w -A "$CHAIN" -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
  "$tool" -w -A "$CHAIN" -m owner --uid-owner "$PROXY_UID" -j ACCEPT
  "$tool" -w -A "$CHAIN" -o lo -d "$loopback" -p tcp --dport "$PROXY_PORT" -j ACCEPT
  # A reset makes a refused TCP connect fail at once instead of after a timeout.
  "$tool" -w -A "$CHAIN" -p tcp -j REJECT --reject-with tcp-reset
  "$tool" -w -A "$CHAIN" -j REJECT
  "$tool" -w -C OUTPUT -j "$CHAIN" 2>/dev/null || "$tool" -w -I OUTPUT 1 -j "$CHAIN"
  echo "iptables-init: $tool: only uid $PROXY_UID opens connections; others reach $loopback:$PROXY_PORT only"
  "$tool" -w -S "$CHAIN"
}

install_chain "$IPTABLES" 127.0.0.1
# Without IPv6 in the kernel there is no IPv6 way out to close; with it, ip6tables must succeed.
if [ -e /proc/net/if_inet6 ]; then
  install_chain "$IP6TABLES" ::1
else
  echo "iptables-init: IPv6 is disabled in this kernel; no ip6tables rules needed"
fi
