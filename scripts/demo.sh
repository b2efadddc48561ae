#!/usr/bin/env bash
# `make demo`: the whole PureLB path on this one machine, left running.
#
#   control plane  etcd, kube-apiserver, kube-controller-manager (testbed/kubeenv), on the host
#   allocator      on the host, against the apiserver
#   n1 n2 n3       network namespaces purelb-demo-n1..n3 = the Kubernetes nodes: LAN address,
#                  kube-lb0, a management veth to the host (to reach the apiserver), and
#                  lbnodeagent with its embedded BGP speaker
#   router         purelb-demo-router: FRR, eBGP AS 65001 with every node (AS 65000), ECMP
#   client         purelb-demo-client, behind the router
#
#   LAN     198.51.100.0/24  2001:db8:1::/64   router .1 / ::1, nodes .11-.13 / ::11-::13
#   client  203.0.113.200/30 2001:db8:3::/64   router .201 / ::1, client .202 / ::2
#   pool    203.0.113.0/26 (aggregation /32), 2001:db8:2::/64 (/128): ServiceGroup `remote`
#   mgmt    a free /30 of 172.31.0.0/16 per node (host end .1, node end .2)
#
# Needs root, the binaries (`make demo` builds them) and FRR (`make deps`). Everything lives in
# $PURELB_DEMO_DIR (default /var/tmp/purelb-demo): pid files, logs, certificates, kubeconfigs.
# `make demo-down` (scripts/demo-down.sh) removes it all. A demo already running is torn
# down first.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEMO_DIR=${PURELB_DEMO_DIR:-/var/tmp/purelb-demo}
KUBEENV=${KUBEENV_BIN:-$ROOT/target/kubeenv/kubeenv}
AGENT=${LBNODEAGENT_BIN:-$ROOT/target/release/lbnodeagent}
ALLOCATOR=${ALLOCATOR_BIN:-$ROOT/target/release/allocator}
FRR_BIN=/usr/lib/frr
PYTHON=${PYTHON:-/usr/bin/python3}

# Fixed ports below the ephemeral range, so the tests' randomly chosen ones never clash.
API_PORT=16443
ETCD_PORT=12379
ETCD_PEER_PORT=12380
ALLOCATOR_PORT=17472
AGENT_PORT=7472

NS=purelb-demo          # network namespaces: purelb-demo-{lan,n1,n2,n3,router,client}
MGMT_IF=pdemo-          # host ends of the management links: pdemo-n1 ...
NODES=(n1 n2 n3)
INSTALL_NS=purelb-system

LAN4=198.51.100         # .0/24
LAN6=2001:db8:1:        # :/64
ROUTER4=$LAN4.1
ROUTER6=${LAN6}:1
ROUTER_CLIENT4=203.0.113.201
CLIENT4=203.0.113.202
ROUTER_CLIENT6=2001:db8:3::1
CLIENT6=2001:db8:3::2

LOGS=$DEMO_DIR/logs
PIDS=$DEMO_DIR/pids
FRR_DIR=$DEMO_DIR/frr

# Colours on a terminal only.
if [ -t 1 ]; then
	BOLD=$'\033[1m' RED=$'\033[31m' YELLOW=$'\033[33m' PLAIN=$'\033[0m'
else
	BOLD='' RED='' YELLOW='' PLAIN=''
fi
say() { printf '\n%s==> %s%s\n' "$BOLD" "$*" "$PLAIN"; }
info() { printf '    %s\n' "$*"; }
die() {
	printf '\n%serror:%s %s\n' "$RED" "$PLAIN" "$*" >&2
	exit 1
}

FINISHED=
on_exit() {
	local status=$?
	if [ "$status" != 0 ] && [ -z "$FINISHED" ] && [ -d "$PIDS" ]; then
		printf '\n%sdemo failed%s. What was started is left running for a look:\n' "$RED" "$PLAIN" >&2
		printf '  logs in %s\n  remove it all with: make demo-down\n' "$LOGS" >&2
	fi
}
trap on_exit EXIT
trap 'printf "%serror:%s line %s: \`%s\` failed\n" "$RED" "$PLAIN" "$LINENO" "$BASH_COMMAND" >&2' ERR

# ------------------------------------------------------------------ helpers ---

kubectl() { "$KUBEENV" kubectl --kubeconfig "$DEMO_DIR/kubeconfig" "$@"; }
nsx() {
	local ns=$1
	shift
	ip netns exec "$NS-$ns" "$@"
}
vtysh_r() { vtysh --vty_socket "$FRR_DIR" "$@"; }

# The start time of a process (field 22 of /proc/<pid>/stat), to tell it from a later one
# that reuses its pid. Nothing for a zombie: it has exited, only its parent has not reaped it.
starttime() {
	local s
	s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	s=${s##*) }
	# shellcheck disable=SC2086
	set -- $s
	case $1 in Z | X) return 1 ;; esac
	echo "${20}"
}

# launch NAME CMD...: runs CMD detached (own session, no terminal), output to logs/NAME.log,
# stdin a FIFO it holds open itself, so it never sees end of file (kubeenv's servers exit on
# EOF). Writes "pid starttime" to pids/NAME.pid for demo-down.
launch() {
	local name=$1
	shift
	setsid "$@" >"$LOGS/$name.log" 2>&1 0<>"$DEMO_DIR/lifeline" &
	local pid=$!
	echo "$pid $(starttime "$pid" || echo 0) $name" >"$PIDS/$name.pid"
}

alive() {
	local pid start _
	read -r pid start _ <"$PIDS/$1.pid" || return 1
	[ "$(starttime "$pid" 2>/dev/null)" = "$start" ]
}

# wait_until SECONDS WHAT COMMAND...: polls COMMAND every 0.5 s; on timeout, fails.
# With PROC set, fails at once when that launched process has exited.
wait_until() {
	local timeout=$1 what=$2
	shift 2
	local deadline=$((SECONDS + timeout))
	until "$@" >/dev/null 2>&1; do
		if [ -n "${PROC:-}" ] && ! alive "$PROC"; then
			tail -n 30 "$LOGS/$PROC.log" >&2 || true
			die "$PROC exited while waiting for $what (log: $LOGS/$PROC.log)"
		fi
		if [ "$SECONDS" -ge "$deadline" ]; then
			[ -n "${PROC:-}" ] && { tail -n 30 "$LOGS/$PROC.log" >&2 || true; }
			die "timed out after ${timeout}s waiting for $what"
		fi
		sleep 0.5
	done
}

# A free /30 in 172.31.0.0/16 (no host address in it), from the top down so as to stay
# clear of the test labs, which allocate from the bottom. Call with the netlab lock held.
free_mgmt_subnet() {
	local used a b c d k base
	used=$(ip -4 -o addr show | awk '{split($4, p, "/"); print p[1]}')
	for ((k = 16383; k >= 0; k--)); do
		base=$(((172 << 24) + (31 << 16) + 4 * k))
		local taken=0
		for a in $used; do
			IFS=. read -r a b c d <<<"$a"
			if [ $((((a << 24) + (b << 16) + (c << 8) + d) & ~3)) -eq "$base" ]; then
				taken=1
				break
			fi
		done
		if [ "$taken" = 0 ]; then
			echo "172.31.$(((base >> 8) & 255)).$((base & 255))"
			return 0
		fi
	done
	return 1
}

# addr_plus A.B.C.D N
addr_plus() {
	local a b c d
	IFS=. read -r a b c d <<<"$1"
	echo "$a.$b.$c.$((d + $2))"
}

write_kubeconfig() { # path server [tls-server-name]
	{
		echo "apiVersion: v1"
		echo "kind: Config"
		echo "clusters:"
		echo "- name: purelb-demo"
		echo "  cluster:"
		echo "    server: $2"
		echo "    certificate-authority-data: $CA_DATA"
		if [ -n "${3:-}" ]; then echo "    tls-server-name: $3"; fi
		echo "users:"
		echo "- name: admin"
		echo "  user:"
		echo "    token: $TOKEN"
		echo "contexts:"
		echo "- name: purelb-demo"
		echo "  context: {cluster: purelb-demo, user: admin}"
		echo "current-context: purelb-demo"
	} >"$1"
	chmod 600 "$1"
}

new_netns() { # name forwarding(0|1)
	ip netns add "$NS-$1"
	nsx "$1" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0 \
		net.ipv6.conf.all.dad_transmits=0 net.ipv6.conf.default.dad_transmits=0 \
		"net.ipv4.ip_forward=$2" "net.ipv6.conf.all.forwarding=$2"
	ip -n "$NS-$1" link set lo up
}

# lan_attach NS IFNAME ADDR...: a veth from the LAN bridge to NS.
lan_attach() {
	local ns=$1 ifname=$2
	shift 2
	ip -n "$NS-lan" link add "p-$ns" type veth peer name "$ifname" netns "$NS-$ns"
	ip -n "$NS-lan" link set "p-$ns" master br0 up
	local a
	for a in "$@"; do
		case $a in
		*:*) ip -n "$NS-$ns" addr add "$a" dev "$ifname" nodad ;;
		*) ip -n "$NS-$ns" addr add "$a" dev "$ifname" ;;
		esac
	done
	ip -n "$NS-$ns" link set "$ifname" up
}

# ------------------------------------------------------------- preconditions ---

[ "$(id -u)" = 0 ] || die "run as root (network namespaces, FRR)"
for f in "$KUBEENV" "$AGENT" "$ALLOCATOR"; do
	[ -x "$f" ] || die "$f is missing: run \`make demo\` (it builds it)"
done
for f in "$FRR_BIN/zebra" "$FRR_BIN/staticd" "$FRR_BIN/bgpd"; do
	[ -x "$f" ] || die "$f is missing: install FRR (\`make deps\`)"
done
command -v vtysh >/dev/null || die "vtysh is missing: install FRR (\`make deps\`)"
[ -x "$PYTHON" ] || die "$PYTHON is missing (it serves HTTP on the VIP in the node namespaces)"
getent group frrvty >/dev/null || die "group frrvty is missing: install FRR (\`make deps\`)"

if [ -e "$DEMO_DIR" ] || ip netns list | grep -q "^$NS-"; then
	say "An earlier demo is still here: tearing it down first"
	"$ROOT/scripts/demo-down.sh"
fi
for port in $API_PORT $ETCD_PORT $ETCD_PEER_PORT $ALLOCATOR_PORT; do
	if ss -Hltn "sport = :$port" | grep -q .; then
		die "TCP port $port is in use on this host; the demo needs it (ss -ltnp 'sport = :$port')"
	fi
done

mkdir -p "$LOGS" "$PIDS" "$FRR_DIR"
chmod 700 "$DEMO_DIR"
mkfifo "$DEMO_DIR/lifeline"

# -------------------------------------------------------------- control plane ---

say "Control plane: etcd, kube-apiserver, kube-controller-manager (logs in $LOGS)"
"$KUBEENV" certs "$DEMO_DIR/certs" >/dev/null
CA_DATA=$(base64 -w0 <"$DEMO_DIR/certs/ca.crt")
TOKEN=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
echo "$TOKEN,admin,admin,system:masters" >"$DEMO_DIR/tokens.csv"
chmod 600 "$DEMO_DIR/tokens.csv"
write_kubeconfig "$DEMO_DIR/kubeconfig" "https://127.0.0.1:$API_PORT"

launch etcd "$KUBEENV" etcd --data-dir="$DEMO_DIR/etcd" \
	--client-url="http://127.0.0.1:$ETCD_PORT" --peer-url="http://127.0.0.1:$ETCD_PEER_PORT"
PROC=etcd wait_until 60 "etcd" curl -fsS "http://127.0.0.1:$ETCD_PORT/health"

cert() { echo "$DEMO_DIR/certs/$1"; }
launch apiserver "$KUBEENV" apiserver \
	--etcd-servers="http://127.0.0.1:$ETCD_PORT" \
	--bind-address=0.0.0.0 \
	--secure-port="$API_PORT" \
	--advertise-address=127.0.0.1 \
	--endpoint-reconciler-type=none \
	--cert-dir="$DEMO_DIR/apiserver-certs" \
	--tls-cert-file="$(cert serving.crt)" \
	--tls-private-key-file="$(cert serving.key)" \
	--client-ca-file="$(cert ca.crt)" \
	--token-auth-file="$DEMO_DIR/tokens.csv" \
	--authorization-mode=RBAC \
	--service-account-issuer=https://kubernetes.default.svc.cluster.local \
	--service-account-key-file="$(cert sa.pub)" \
	--service-account-signing-key-file="$(cert sa.key)" \
	--service-cluster-ip-range=10.96.0.0/16,fd00:10:96::/108 \
	--disable-admission-plugins=ServiceAccount \
	--allow-privileged=true
PROC=apiserver wait_until 180 "kube-apiserver /readyz" kubectl get --raw /readyz
PROC=apiserver wait_until 30 "namespace default" kubectl get namespace default

launch controller-manager "$KUBEENV" controller-manager \
	--kubeconfig="$DEMO_DIR/kubeconfig" \
	--leader-elect=false \
	--controllers=endpointslice-controller,endpoints-controller,namespace-controller,garbage-collector-controller,serviceaccount-controller \
	--secure-port=0
PROC=controller-manager wait_until 60 "kube-controller-manager (serviceaccount default/default)" \
	kubectl -n default get serviceaccount default
info "$(kubectl version 2>/dev/null | grep -i server || true)"
info "apiserver https://127.0.0.1:$API_PORT (admin kubeconfig $DEMO_DIR/kubeconfig)"

say "CRDs, namespace $INSTALL_NS, LBNodeAgent default (deploy/crds, deploy/defaults)"
kubectl apply --server-side -f "$ROOT/deploy/crds/" >/dev/null
kubectl wait --for=condition=Established --timeout=60s -f "$ROOT/deploy/crds/" >/dev/null
kubectl create namespace "$INSTALL_NS" >/dev/null
kubectl apply --server-side -k "$ROOT/deploy/defaults" >/dev/null
kubectl get crd -o custom-columns=CRD:.metadata.name --no-headers | sed 's/^/    /'

# ------------------------------------------------------------------- network ---

say "Network: LAN $LAN4.0/24 + ${LAN6}:/64, nodes n1-n3, router, client"
new_netns lan 0
ip -n "$NS-lan" link add br0 type bridge mcast_snooping 0
ip -n "$NS-lan" link set br0 up

new_netns router 1
# Hash on ports too, so the client's connections spread over the nodes (ECMP).
nsx router sysctl -qw net.ipv4.fib_multipath_hash_policy=1 net.ipv6.fib_multipath_hash_policy=1
lan_attach router eth0 "$ROUTER4/24" "$ROUTER6/64"

new_netns client 0
ip -n "$NS-router" link add eth1 type veth peer name eth0 netns "$NS-client"
ip -n "$NS-router" addr add "$ROUTER_CLIENT4/30" dev eth1
ip -n "$NS-router" addr add "$ROUTER_CLIENT6/64" dev eth1 nodad
ip -n "$NS-client" addr add "$CLIENT4/30" dev eth0
ip -n "$NS-client" addr add "$CLIENT6/64" dev eth0 nodad
ip -n "$NS-router" link set eth1 up
ip -n "$NS-client" link set eth0 up
ip -n "$NS-client" -4 route add default via "$ROUTER_CLIENT4"
ip -n "$NS-client" -6 route add default via "$ROUTER_CLIENT6"

declare -A NODE4 NODE6 MGMT_HOST MGMT_NODE
for i in 1 2 3; do
	n=n$i
	NODE4[$n]=$LAN4.1$i
	NODE6[$n]=${LAN6}:1$i
	new_netns "$n" 0
	lan_attach "$n" eth0 "${NODE4[$n]}/24" "${NODE6[$n]}/64"
	# The way back to the client (and anything else) is the router.
	ip -n "$NS-$n" -4 route add default via "$ROUTER4"
	ip -n "$NS-$n" -6 route add default via "$ROUTER6"
	# kube-lb0, where remote addresses go. This kernel has no dummy driver: ifb behaves
	# alike (NOARP, drops what is sent to it, addresses on it are local).
	ip -n "$NS-$n" link add kube-lb0 type ifb
	ip -n "$NS-$n" link set kube-lb0 up
done

# Management links, under the test labs' host-wide lock (testbed/src/netlab/host.rs) so
# that a test starting meanwhile does not pick the same /30.
mkdir -p /run/purelb-netlab
exec 9>>/run/purelb-netlab/lock
flock 9
for n in "${NODES[@]}"; do
	base=$(free_mgmt_subnet) || die "no free /30 left in 172.31.0.0/16"
	MGMT_HOST[$n]=$(addr_plus "$base" 1)
	MGMT_NODE[$n]=$(addr_plus "$base" 2)
	ip link add "$MGMT_IF$n" type veth peer name mgmt0 netns "$NS-$n"
	ip addr add "${MGMT_HOST[$n]}/30" dev "$MGMT_IF$n"
	ip link set "$MGMT_IF$n" up
	ip -n "$NS-$n" addr add "${MGMT_NODE[$n]}/30" dev mgmt0
	ip -n "$NS-$n" link set mgmt0 up
done
exec 9>&-
for n in "${NODES[@]}"; do
	# The serving certificate names 127.0.0.1 and localhost only: verify it as localhost.
	write_kubeconfig "$DEMO_DIR/kubeconfig-$n" "https://${MGMT_HOST[$n]}:$API_PORT" localhost
	echo "${MGMT_NODE[$n]}" >"$DEMO_DIR/mgmt-$n"
	info "$n: LAN ${NODE4[$n]} ${NODE6[$n]}, kube-lb0, management ${MGMT_NODE[$n]} <-> host ${MGMT_HOST[$n]} ($MGMT_IF$n)"
done
info "router: LAN $ROUTER4 $ROUTER6, client side $ROUTER_CLIENT4 $ROUTER_CLIENT6"
info "client: $CLIENT4 $CLIENT6, default route via the router"
wait_until 15 "n1 reaching the apiserver over its management link" \
	nsx n1 "$KUBEENV" kubectl --kubeconfig "$DEMO_DIR/kubeconfig-n1" get --raw /readyz

say "Node objects n1 n2 n3 (InternalIP = LAN address)"
for n in "${NODES[@]}"; do
	kubectl apply --server-side -f - >/dev/null <<EOF
apiVersion: v1
kind: Node
metadata:
  name: $n
  labels:
    kubernetes.io/hostname: $n
    kubernetes.io/os: linux
EOF
	kubectl patch node "$n" --subresource=status --type=merge -p "{\"status\":{\"addresses\":[
		{\"type\":\"InternalIP\",\"address\":\"${NODE4[$n]}\"},
		{\"type\":\"InternalIP\",\"address\":\"${NODE6[$n]}\"},
		{\"type\":\"Hostname\",\"address\":\"$n\"}]}}" >/dev/null
done
kubectl get nodes -o wide 2>/dev/null | sed 's/^/    /' || kubectl get nodes | sed 's/^/    /'

# ----------------------------------------------------------------------- FRR ---

say "FRR in $NS-router: AS 65001, eBGP with n1-n3 (AS 65000), maximum-paths 8"
cat >"$FRR_DIR/frr.conf" <<EOF
frr defaults traditional
hostname purelb-demo-router
log stdout informational
!
router bgp 65001
 bgp router-id $ROUTER4
 no bgp ebgp-requires-policy
 no bgp default ipv4-unicast
 neighbor NODES4 peer-group
 neighbor NODES4 remote-as 65000
 neighbor NODES4 description PureLB nodes (IPv4 sessions)
 neighbor NODES6 peer-group
 neighbor NODES6 remote-as 65000
 neighbor NODES6 description PureLB nodes (IPv6 sessions)
$(for n in "${NODES[@]}"; do
	echo " neighbor ${NODE4[$n]} peer-group NODES4"
	echo " neighbor ${NODE6[$n]} peer-group NODES6"
done)
 !
 address-family ipv4 unicast
  neighbor NODES4 activate
  maximum-paths 8
 exit-address-family
 !
 address-family ipv6 unicast
  neighbor NODES6 activate
  maximum-paths 8
 exit-address-family
!
EOF
vtysh --vty_socket "$FRR_DIR" -C -f "$FRR_DIR/frr.conf" >/dev/null ||
	die "FRR rejected $FRR_DIR/frr.conf"
for d in zebra staticd bgpd; do
	launch "frr-$d" ip netns exec "$NS-router" "$FRR_BIN/$d" -f "$FRR_DIR/frr.conf" \
		--vty_socket "$FRR_DIR" -i "$FRR_DIR/$d.pid" -z "$FRR_DIR/zserv.api" -P 0 \
		--log stdout --limit-fds 1024 -u root -g frrvty
	if [ "$d" = zebra ]; then
		PROC=frr-zebra wait_until 30 "zebra" test -S "$FRR_DIR/zserv.api" -a -S "$FRR_DIR/zebra.vty"
	else
		PROC=frr-$d wait_until 30 "$d" test -S "$FRR_DIR/$d.vty"
	fi
done
PROC=frr-bgpd wait_until 30 "vtysh" vtysh_r -c "show version"

# ------------------------------------------------------------------- PureLB ---

say "PureLB: allocator on the host, lbnodeagent in each node namespace"
launch allocator "$ALLOCATOR" --kubeconfig "$DEMO_DIR/kubeconfig" --namespace "$INSTALL_NS" \
	--leader-elect=false --port "$ALLOCATOR_PORT"
PROC=allocator wait_until 30 "allocator /readyz" curl -fsS "http://127.0.0.1:$ALLOCATOR_PORT/readyz"
info "allocator: pid $(cut -d' ' -f1 "$PIDS/allocator.pid"), metrics http://127.0.0.1:$ALLOCATOR_PORT/metrics"
for n in "${NODES[@]}"; do
	launch "agent-$n" ip netns exec "$NS-$n" "$AGENT" --namespace "$INSTALL_NS" --node-name "$n" \
		--pod-uid "purelb-demo-$n" --kubeconfig "$DEMO_DIR/kubeconfig-$n" \
		--host "${MGMT_NODE[$n]}" --port "$AGENT_PORT"
done
for n in "${NODES[@]}"; do
	PROC=agent-$n wait_until 60 "lbnodeagent on $n /healthz" \
		curl -fsS "http://${MGMT_NODE[$n]}:$AGENT_PORT/healthz"
	info "lbnodeagent $n: pid $(cut -d' ' -f1 "$PIDS/agent-$n.pid"), metrics http://${MGMT_NODE[$n]}:$AGENT_PORT/metrics"
done

say "Objects: ServiceGroup remote, BGPConfiguration default, Service default/demo"
cat >"$DEMO_DIR/demo.yaml" <<EOF
# A remote pool: every node puts the Service's address on kube-lb0 and its embedded BGP
# speaker advertises it to the router, which spreads traffic over the nodes (ECMP).
apiVersion: purelb.io/v2
kind: ServiceGroup
metadata:
  name: remote
  namespace: $INSTALL_NS
spec:
  remote:
    v4pools:
    - subnet: 203.0.113.0/26
      pool: 203.0.113.10-203.0.113.50
      aggregation: /32
    v6pools:
    - subnet: 2001:db8:2::/64
      pool: 2001:db8:2::10-2001:db8:2::ff
      aggregation: /128
---
apiVersion: bgp.purelb.io/v1
kind: BGPConfiguration
metadata:
  name: default
  namespace: $INSTALL_NS
spec:
  global:
    asn: 65000
    routerID: ""   # the node's address
    listenPort: 179
  netlinkImport:
    enabled: true
    interfaceList:
    - kube-lb0
  neighbors:
  - config:
      neighborAddress: $ROUTER4
      peerAsn: 65001
      description: demo router (IPv4)
    afiSafis:
    - family: ipv4-unicast
      enabled: true
  - config:
      neighborAddress: "$ROUTER6"
      peerAsn: 65001
      description: demo router (IPv6)
    afiSafis:
    - family: ipv6-unicast
      enabled: true
---
# No selector and no pods: the HTTP servers in the node namespaces stand in for the
# backends (and kube-proxy), listening on every address, the VIP included.
apiVersion: v1
kind: Service
metadata:
  name: demo
  namespace: default
  annotations:
    purelb.io/service-group: remote
spec:
  type: LoadBalancer
  loadBalancerClass: purelb.io/purelbv2
  ipFamilyPolicy: PreferDualStack
  ipFamilies: [IPv4, IPv6]
  ports:
  - name: http
    port: 80
    protocol: TCP
EOF
kubectl apply --server-side -f "$DEMO_DIR/demo.yaml" | sed 's/^/    /'
# Not applied: for the user to try.
cat >"$DEMO_DIR/web.yaml" <<EOF
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: default
  annotations:
    purelb.io/service-group: remote
spec:
  type: LoadBalancer
  loadBalancerClass: purelb.io/purelbv2
  ports:
  - name: http
    port: 80
EOF

# A tiny HTTP server on port 80 in each node namespace, answering with the node's name.
cat >"$DEMO_DIR/http-server.py" <<'EOF'
import http.server
import socket
import sys

NODE, PORT = sys.argv[1], int(sys.argv[2])


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        local = self.connection.getsockname()[0].removeprefix("::ffff:")
        peer = self.client_address[0].removeprefix("::ffff:")
        body = f"hello from {NODE}: {peer} -> {local} port {PORT}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class Server(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6

    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


Server(("::", PORT), Handler).serve_forever()
EOF
for n in "${NODES[@]}"; do
	launch "http-$n" ip netns exec "$NS-$n" "$PYTHON" -u "$DEMO_DIR/http-server.py" "$n" 80
done

# ------------------------------------------------------------------ results ---

PROBLEMS=()
problem() {
	PROBLEMS+=("$*")
	printf '    %sWARNING:%s %s\n' "$YELLOW" "$PLAIN" "$*"
}

say "Service default/demo"
svc_ips() { kubectl -n default get service demo -o jsonpath='{.status.loadBalancer.ingress[*].ip}'; }
svc_has_ips() { [ "$(svc_ips | wc -w)" -ge "$1" ]; }
wait_until 60 "an external IP on Service demo" svc_has_ips 1
# PreferDualStack: the IPv6 address too, unless the cluster cannot give one.
(wait_until 10 "a second address on Service demo" svc_has_ips 2) 2>/dev/null || true
read -r -a VIPS <<<"$(svc_ips)"
VIP4='' VIP6=''
for v in "${VIPS[@]}"; do
	case $v in *:*) VIP6=$v ;; *) VIP4=$v ;; esac
done
kubectl -n default get service demo -o wide | sed 's/^/    /'
[ -n "$VIP4" ] || die "Service demo got no IPv4 address (${VIPS[*]})"

on_kube_lb0() { # node vip
	ip -n "$NS-$1" -o addr show dev kube-lb0 | grep -q " ${2}/"
}
all_on_kube_lb0() {
	local n
	for n in "${NODES[@]}"; do on_kube_lb0 "$n" "$1" || return 1; done
}
say "The address on kube-lb0 of every node"
for v in $VIP4 $VIP6; do
	if ! (wait_until 30 "$v on kube-lb0 of n1-n3" all_on_kube_lb0 "$v") 2>/dev/null; then
		problem "$v is not on kube-lb0 of every node"
	fi
done
for n in "${NODES[@]}"; do
	echo "    $n: $(ip -n "$NS-$n" -br addr show dev kube-lb0)"
done

# Kernel next hops of the router for a prefix: one per line.
router_route() {
	case $1 in
	*:*) ip -n "$NS-router" -6 route show "$1" ;;
	*) ip -n "$NS-router" -4 route show "$1" ;;
	esac
}
router_nexthops() {
	router_route "$1" 2>/dev/null | grep -o 'via [0-9a-f.:]*' | sort -u
}
has_nexthops() { [ "$(router_nexthops "$1" | wc -l)" -ge "$2" ]; }

# When BGP does not come up, one long wait is enough.
BGP_WAIT=60
say "The router's route to the Service (BGP, one next hop per node)"
for v in $VIP4 $VIP6; do
	case $v in
	*:*) plen=128 fam=ipv6 ;;
	*) plen=32 fam=ip ;;
	esac
	if ! (wait_until "$BGP_WAIT" "$v/$plen with 3 next hops in the router's FIB" has_nexthops "$v/$plen" 3) 2>/dev/null; then
		problem "the router has no ECMP route to $v/$plen with three next hops"
		BGP_WAIT=5
	fi
	echo "    \$ vtysh -c 'show $fam route $v/$plen'"
	vtysh_r -c "show $fam route $v/$plen" | sed 's/^/    /'
	bfam=ipv4
	[ "$fam" = ipv6 ] && bfam=ipv6
	echo "    \$ vtysh -c 'show bgp $bfam unicast $v/$plen'"
	vtysh_r -c "show bgp $bfam unicast $v/$plen" | sed 's/^/    /'
	echo "    \$ ip -n $NS-router route show $v/$plen"
	router_route "$v/$plen" | sed 's/^/    /'
done
echo "    \$ vtysh -c 'show bgp summary'"
vtysh_r -c "show bgp summary" | sed 's/^/    /'

say "kubectl get bgpns (BGPNodeStatus, written by each node's speaker)"
bgpns_ready() {
	[ "$(kubectl get bgpns -o go-template='{{range .items}}{{range .status.neighbors}}{{if eq .state "Established"}}x{{end}}{{end}}{{end}}' 2>/dev/null | wc -c)" -ge 6 ]
}
if ! (wait_until "$BGP_WAIT" "BGPNodeStatus with 6 Established neighbours" bgpns_ready) 2>/dev/null; then
	problem "BGPNodeStatus does not show every node's two neighbours Established"
fi
kubectl get bgpns 2>&1 | sed 's/^/    /'
# shellcheck disable=SC2016 # a Go template, not shell
kubectl get bgpns -o go-template='{{range .items}}{{$n := .metadata.name}}{{range .status.neighbors}}    {{$n}}  {{.address}}  {{.state}}  sent={{.prefixesSent}} received={{.prefixesReceived}}{{"\n"}}{{end}}{{end}}' 2>/dev/null || true

say "From the client namespace ($CLIENT4) to the Service, through the router"
fetch() { # url
	if command -v curl >/dev/null; then
		nsx client curl -sS -g --max-time 3 "$1"
	else
		nsx client "$PYTHON" -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=3).read().decode(), end="")' "$1"
	fi
}
tries=6
[ "$BGP_WAIT" = 60 ] || tries=2 # no route: each try takes its 3 s timeout
for v in $VIP4 $VIP6; do
	case $v in *:*) url="http://[$v]/" ;; *) url="http://$v/" ;; esac
	echo "    \$ ip netns exec $NS-client curl $url    ($tries times: the router spreads connections)"
	ok=0
	for ((k = 0; k < tries; k++)); do
		if out=$(fetch "$url" 2>&1); then
			ok=$((ok + 1))
			echo "    $out"
		else
			echo "    failed: $out"
		fi
	done
	[ "$ok" = "$tries" ] || problem "$((tries - ok)) of $tries fetches of $url from the client failed"
done

# ---------------------------------------------------------------- summary ---

cat <<EOF

${BOLD}PureLB demo is running${PLAIN} (everything in $DEMO_DIR; logs in $LOGS).

  kubectl:    export KUBECONFIG=$DEMO_DIR/kubeconfig
              $KUBEENV kubectl get svc,bgpns,sg -A
              (any kubectl works with that KUBECONFIG; kubeenv's is the one this repo builds)
  try:        $KUBEENV kubectl apply -f $DEMO_DIR/web.yaml    # another Service, same pool
  router:     vtysh --vty_socket $FRR_DIR -c 'show bgp summary'
  client:     ip netns exec $NS-client curl http://${VIP4:-<vip>}/
  a node:     ip netns exec $NS-n1 ip addr show kube-lb0
  agent log:  $LOGS/agent-n1.log (metrics: curl http://${MGMT_NODE[n1]}:$AGENT_PORT/metrics)
  tear down:  make demo-down
EOF

FINISHED=1
if [ "${#PROBLEMS[@]}" -gt 0 ]; then
	printf '\n%sNot everything came up:%s\n' "$YELLOW" "$PLAIN" >&2
	printf '  - %s\n' "${PROBLEMS[@]}" >&2
	printf 'The lab is left running; see the logs in %s, and "make demo-down" to remove it.\n' "$LOGS" >&2
	exit 1
fi
