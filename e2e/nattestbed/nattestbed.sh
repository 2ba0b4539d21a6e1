#!/bin/sh
# nattestbed.sh: a NAT testbed in Linux network namespaces, built and torn down in one command
# (as root). Nothing leaves the machine: every address lives in the namespaces this script
# creates, which have no route to the host's own network.
#
#   nattestbed.sh up [PREFIX]     build it (PREFIX names the namespaces, default ssn)
#   nattestbed.sh down [PREFIX]   tear it down (also after a failed up)
#   nattestbed.sh check [PREFIX]  show that each NAT behaves as intended
#
# Layout ("public" addresses from 11.17.0.0/24, which libp2p takes as public; private ones
# from 10.17.1.0/24 and 10.17.2.0/24):
#
#   PREFIX-net    the "internet": a bridge joining the public segment
#   PREFIX-req    requester          11.17.0.10, whose firewall admits new connections from
#                 the relay only (established ones from anyone)
#   PREFIX-relay  relay-capable agent 11.17.0.20
#   PREFIX-nat1   NAT 11.17.0.31 / 10.17.1.1: one mapping per source, whatever the destination
#                 (endpoint-independent): masquerade keeps the source port whenever the
#                 mapping it gives is unique, so 10.17.1.10:4001 is 11.17.0.31:4001 toward
#                 every destination (`persistent` only pins the address, of which there is
#                 one); hole punching works
#   PREFIX-prov1  provider sensor    10.17.1.10 behind nat1
#   PREFIX-nat2   NAT 11.17.0.32 / 10.17.2.1: a new port per destination (symmetric):
#                 masquerade `random` randomises the port of each new mapping, so one source
#                 port is seen at a different port by each destination; only the relay works
#   PREFIX-prov2  provider sensor    10.17.2.10 behind nat2
#
# The NATs let in only what answers a mapping (conntrack established/related), like a home
# router. Needs: ip (iproute2), nft (nftables).
set -eu

cmd=${1:-}
P=${2:-ssn}
NS="$P-net $P-req $P-relay $P-nat1 $P-prov1 $P-nat2 $P-prov2"

die() { echo "nattestbed: $*" >&2; exit 1; }

down() {
	for ns in $NS; do
		ip netns del "$ns" 2>/dev/null || true
	done
}

# link NS1 IF1 NS2 IF2: a veth pair between two namespaces.
link() {
	ip link add "$2" netns "$1" type veth peer name "$4" netns "$3"
	ip -n "$1" link set "$2" up
	ip -n "$3" link set "$4" up
}

# nat NAME FLAGS: a NAT namespace: masquerade (with FLAGS) out of wan, conntrack filter in from it.
nat() {
	ns="$P-$1"
	ip netns exec "$ns" sysctl -qw net.ipv4.ip_forward=1
	ip netns exec "$ns" nft -f - <<NFT
table ip nattestbed {
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		oifname "wan" masquerade $2
	}
	chain forward {
		type filter hook forward priority filter; policy drop;
		iifname "lan" oifname "wan" accept
		iifname "wan" oifname "lan" ct state established,related accept
	}
	chain input {
		type filter hook input priority filter; policy accept;
		iifname "wan" ct state new drop
	}
}
NFT
}

up() {
	command -v ip >/dev/null || die "ip (iproute2) is missing: apt-get install iproute2"
	command -v nft >/dev/null || die "nft is missing: apt-get install nftables"
	[ "$(id -u)" = 0 ] || die "must run as root (it creates network namespaces)"
	down
	# A step that fails (set -e) or a signal tears down what was built so far: the
	# namespaces, and with them their links and nft tables.
	trap 'down' EXIT
	trap 'exit 1' INT TERM
	for ns in $NS; do
		ip netns add "$ns" || { down; die "cannot create network namespace $ns"; }
		ip -n "$ns" link set lo up
	done
	ip -n "$P-net" link add br0 type bridge
	ip -n "$P-net" link set br0 up
	# The public segment.
	for pair in req:10 relay:20 nat1:31 nat2:32; do
		name=${pair%%:*} host=${pair##*:}
		link "$P-net" "p-$name" "$P-$name" wan
		ip -n "$P-net" link set "p-$name" master br0
		ip -n "$P-$name" addr add "11.17.0.$host/24" dev wan
	done
	# The private segments, each behind its NAT.
	for i in 1 2; do
		link "$P-nat$i" lan "$P-prov$i" eth0
		ip -n "$P-nat$i" addr add "10.17.$i.1/24" dev lan
		ip -n "$P-prov$i" addr add "10.17.$i.10/24" dev eth0
		ip -n "$P-prov$i" route add default via "10.17.$i.1"
	done
	nat nat1 persistent
	nat nat2 random
	# The requester's firewall admits new connections from the relay only: a provider cannot
	# simply dial it back (connection reversal); only hole punching or the relay join them.
	ip netns exec "$P-req" nft -f - <<NFT
table ip nattestbed {
	chain input {
		type filter hook input priority filter; policy drop;
		iifname "lo" accept
		ct state established,related accept
		ip saddr 11.17.0.20 accept
		icmp type echo-request accept
	}
}
NFT
	trap - EXIT INT TERM
}

# check: each provider reaches the public segment; the public segment reaches no provider.
check() {
	for i in 1 2; do
		ip netns exec "$P-prov$i" ping -q -c1 -W2 11.17.0.10 >/dev/null || die "prov$i cannot reach the requester through nat$i"
		# The requester has no route to a private segment, so a ping would fail whatever the
		# NAT does: route it through nat$i for the probe, leaving nat$i's filter to stop it.
		ip -n "$P-req" route replace "10.17.$i.0/24" via "11.17.0.3$i"
		reached=false
		if ip netns exec "$P-req" ping -q -c1 -W1 "10.17.$i.10" >/dev/null 2>&1; then
			reached=true
		fi
		ip -n "$P-req" route del "10.17.$i.0/24"
		! $reached || die "the requester reaches prov$i's private address: nat$i does not isolate it"
	done
	echo "nattestbed $P: up; prov1 behind nat1 (one mapping per source), prov2 behind nat2 (one per destination)"
}

case "$cmd" in
up) up; check ;;
down) down ;;
check) check ;;
*) echo "usage: $0 up|down|check [PREFIX]" >&2; exit 2 ;;
esac
