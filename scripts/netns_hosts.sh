#!/usr/bin/env bash
# Several Docker "hosts" on this one machine, for multi-node tests: each a network namespace ddh<i>
# with its own dockerd (and the containerd that dockerd runs itself), joined by a veth pair to the
# bridge ddbr0 (10.231.0.1/24) in the root namespace. Host i is 10.231.0.(10+i); its engine listens
# on tcp://10.231.0.(10+i):2375 (plain TCP, no TLS: reachable only from this machine) and on
# unix:///run/deepdock-nshost<i>.sock.
#   scripts/netns_hosts.sh start N          # hosts 1..N (N = 1..4); hosts already up are left alone;
#                                           # waits until every engine answers
#   scripts/netns_hosts.sh stop             # tears everything down (safe when nothing is up); the data
#                                           # roots /var/lib/deepdock-nshost<i> are kept (image cache)
#   scripts/netns_hosts.sh stop-engine I    # SIGKILLs host I's dockerd, containerd, shims and containers,
#                                           # like a lost machine; the host's address stays (refuses)
#   scripts/netns_hosts.sh start-engine I   # starts host I's engine again and waits until it answers
#   scripts/netns_hosts.sh urls             # one engine URL per line, for the hosts that are up
#   scripts/netns_hosts.sh status           # exit 0 when at least one host is up and every engine answers
# Safety (see /work/shared/INFRA.md): the hosts have no route out of the machine. A namespace has only
# its connected /24 (no default route, IPv6 off on the link), the root namespace drops everything
# forwarded from ddbr0 to anywhere else (iptables FORWARD rule), and names resolve through a local
# dnsmasq stub on 10.231.0.1 that knows only ddh1..ddhN and answers everything else NXDOMAIN at once.
# Each dockerd runs under `nsenter --net` + `unshare --mount --uts` (not `ip netns exec`, which remounts
# /sys and breaks dockerd's cgroup detection): own hostname ddh<i>, own /etc/hosts and /etc/resolv.conf.
# Needs root, ip (iproute2), iptables, nsenter/unshare (util-linux), dockerd and dnsmasq (Debian's
# dnsmasq-base, installed here with apt-get when missing). DEEPDOCK_NSHOSTS_START_TIMEOUT_S overrides
# how long start waits for the engines (60 s).
set -euo pipefail

MAX_HOSTS=4
BRIDGE="ddbr0"
BRIDGE_ADDR="10.231.0.1"
SUBNET="10.231.0.0/24"
ENGINE_PORT=2375
STATE_DIR="/run/deepdock-nshosts"
LOCK="/run/deepdock-nshosts.lock"
DNS_PID="$STATE_DIR/dnsmasq.pid"
DNS_HOSTS="$STATE_DIR/dns.hosts"
DNS_LOG="/var/log/deepdock-nshosts-dnsmasq.log"
START_TIMEOUT_S="${DEEPDOCK_NSHOSTS_START_TIMEOUT_S:-60}"
STOP_TIMEOUT_S=20
# Root-namespace FORWARD rule: nothing that enters from the hosts' bridge leaves by another interface.
FWD_RULE=(FORWARD -i "$BRIDGE" ! -o "$BRIDGE" -j DROP)

ns_name() { echo "ddh$1"; }
addr() { echo "10.231.0.$((10 + $1))"; }
url() { echo "tcp://$(addr "$1"):$ENGINE_PORT"; }
data_root() { echo "/var/lib/deepdock-nshost$1"; }
exec_root() { echo "/run/deepdock-nshost$1"; }
pidfile() { echo "/run/deepdock-nshost$1.pid"; }
sock() { echo "/run/deepdock-nshost$1.sock"; }
engine_log() { echo "/var/log/deepdock-nshost$1.log"; }
# Each engine's own address pool (10.232/16 for host 1 ...), so its networks never overlap another's.
pool() { echo "10.$((231 + $1)).0.0/16"; }

die() { echo "netns_hosts: $*" >&2; exit 1; }

host_exists() { [[ -e "/run/netns/$(ns_name "$1")" ]]; }

hosts_up() {
  local i
  for i in $(seq 1 "$MAX_HOSTS"); do
    if host_exists "$i"; then echo "$i"; fi
  done
}

engine_answers() {
  # Only probe an address that is really on the bridge: with no bridge the root namespace's default
  # route would carry the probe off the machine.
  host_exists "$1" && ip link show "$BRIDGE" >/dev/null 2>&1 || return 1
  timeout 5 docker -H "$(url "$1")" version --format '{{.Server.Version}}' >/dev/null 2>&1
}

pid_alive() { [[ -n "${1:-}" ]] && kill -0 "$1" 2>/dev/null; }

# PIDs of everything that belongs to host i's engine: its dockerd, its containerd and shims (their
# command lines name its exec root), every process in its network namespace (host-network containers,
# docker-proxy), and all their descendants (containers on the engine's own networks are children of a
# shim).
engine_pids() {
  local i="$1" er p
  er="$(exec_root "$i")"
  local -A seen=()
  local queue=()
  # shellcheck disable=SC2207
  queue+=($(grep -l -a -E -- "${er}[/.]" /proc/[0-9]*/cmdline 2>/dev/null | cut -d/ -f3 || true))
  if host_exists "$i"; then
    # shellcheck disable=SC2207
    queue+=($(find /proc/[0-9]*/ns/net -maxdepth 0 -lname "net:\[$(stat -L -c %i "/run/netns/$(ns_name "$i")")\]" \
      2>/dev/null | cut -d/ -f3 || true))
  fi
  while ((${#queue[@]})); do
    p="${queue[0]}"
    queue=("${queue[@]:1}")
    [[ -n "${seen[$p]:-}" || "$p" == "$$" || "$p" == "$BASHPID" ]] && continue
    seen[$p]=1
    # shellcheck disable=SC2207
    queue+=($(pgrep -P "$p" || true))
  done
  if ((${#seen[@]})); then printf '%s\n' "${!seen[@]}"; fi
}

# SIGKILL everything of host i's engine (until nothing is left), like a machine that lost power.
kill_engine_hard() {
  local i="$1" pids round
  for round in $(seq 1 20); do
    mapfile -t pids < <(engine_pids "$i")
    ((${#pids[@]})) || break
    kill -KILL "${pids[@]}" 2>/dev/null || true
    sleep 0.1
  done
  rm -f "$(pidfile "$i")" "$(sock "$i")"
}

# Graceful stop of the engines given as arguments, in parallel: SIGTERM (dockerd stops its containers
# and its containerd), SIGKILL of whatever is left after STOP_TIMEOUT_S.
stop_engines() {
  local i pid waiting
  for i in "$@"; do
    pid="$(cat "$(pidfile "$i")" 2>/dev/null || true)"
    if pid_alive "$pid"; then kill -TERM "$pid" 2>/dev/null || true; fi
  done
  for _ in $(seq 1 $((STOP_TIMEOUT_S * 5))); do
    waiting=0
    for i in "$@"; do
      pid="$(cat "$(pidfile "$i")" 2>/dev/null || true)"
      if pid_alive "$pid"; then waiting=1; fi
    done
    ((waiting)) || break
    sleep 0.2
  done
  for i in "$@"; do kill_engine_hard "$i"; done
}

write_name_files() {
  # The dnsmasq hosts file and each host's /etc/hosts name every host that is up. Files are rewritten
  # in place (same inode) so that the bind mounts over /etc/hosts in running engines see new hosts.
  local i j names="" f
  for j in $(hosts_up); do names+="$(addr "$j") $(ns_name "$j")"$'\n'; done
  printf '%s' "$names" >"$DNS_HOSTS"
  for i in $(hosts_up); do
    printf 'nameserver %s\n' "$BRIDGE_ADDR" >"$STATE_DIR/ddh$i.resolv.conf"
    f="$STATE_DIR/ddh$i.hosts"
    printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n%s' "$names" >"$f"
  done
  chmod 0644 "$DNS_HOSTS" "$STATE_DIR"/ddh*.hosts "$STATE_DIR"/ddh*.resolv.conf
}

dns_running() { pid_alive "$(cat "$DNS_PID" 2>/dev/null || true)"; }

ensure_dnsmasq() {
  if ! command -v dnsmasq >/dev/null; then
    echo "installing dnsmasq-base (the hosts' DNS stub)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dnsmasq-base >/dev/null
  fi
}

start_dns() {
  if dns_running; then
    kill -HUP "$(cat "$DNS_PID")"  # re-reads --addn-hosts
    return 0
  fi
  # No upstream (--no-resolv), no /etc/hosts, every domain local (--local=/#/): names it does not know
  # get NXDOMAIN at once instead of a 10 s timeout. Listens on the bridge address only.
  dnsmasq --conf-file=/dev/null --bind-interfaces --listen-address="$BRIDGE_ADDR" --port=53 \
    --no-resolv --no-hosts --addn-hosts="$DNS_HOSTS" --local=/#/ --no-negcache \
    --pid-file="$DNS_PID" --log-facility="$DNS_LOG" 9>&-
  CREATED_DNS=1
}

stop_dns() {
  local pid
  pid="$(cat "$DNS_PID" 2>/dev/null || true)"
  if pid_alive "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do pid_alive "$pid" || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$DNS_PID"
}

ensure_bridge() {
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link add "$BRIDGE" type bridge
    CREATED_BRIDGE=1
  fi
  sysctl -qw "net.ipv6.conf.$BRIDGE.disable_ipv6=1"
  ip addr replace "$BRIDGE_ADDR/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
}

ensure_rule() {
  if ! iptables -C "${FWD_RULE[@]}" 2>/dev/null; then
    iptables -I "${FWD_RULE[0]}" 1 "${FWD_RULE[@]:1}"
    CREATED_RULE=1
  fi
  # IPv6 is off on every link of the hosts; the same rule for IPv6 is a second fence where available.
  if command -v ip6tables >/dev/null && ! ip6tables -C "${FWD_RULE[@]}" 2>/dev/null; then
    ip6tables -I "${FWD_RULE[0]}" 1 "${FWD_RULE[@]:1}" 2>/dev/null ||
      echo "netns_hosts: no ip6tables rule (IPv6 is off on the links anyway)" >&2
  fi
}

remove_rule() {
  while iptables -C "${FWD_RULE[@]}" 2>/dev/null; do iptables -D "${FWD_RULE[@]}"; done
  if command -v ip6tables >/dev/null; then
    while ip6tables -C "${FWD_RULE[@]}" 2>/dev/null; do ip6tables -D "${FWD_RULE[@]}"; done
  fi
}

# Namespace, veth pair and addresses of host i (no dockerd yet). Only the connected /24 is routed.
setup_host_net() {
  local i="$1" ns tmp
  ns="$(ns_name "$i")"
  tmp="ddp$i"
  if ! host_exists "$i"; then ip netns add "$ns"; fi
  if ! ip -n "$ns" link show dd0 >/dev/null 2>&1; then
    ip link del "ddv$i" 2>/dev/null || true
    ip link add "ddv$i" type veth peer name "$tmp"
    sysctl -qw "net.ipv6.conf.ddv$i.disable_ipv6=1"
    ip link set "$tmp" netns "$ns"
    ip -n "$ns" link set "$tmp" name dd0
  fi
  nsenter --net="/run/netns/$ns" sysctl -qw net.ipv6.conf.dd0.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
  ip link set "ddv$i" master "$BRIDGE" up
  ip -n "$ns" link set lo up
  ip -n "$ns" addr replace "$(addr "$i")/24" dev dd0
  ip -n "$ns" link set dd0 up
  if ip -n "$ns" route show default | grep -q .; then die "$ns has a default route; refusing to go on"; fi
  # Replies from the root namespace to containers on an engine's own networks go back to that host
  # instead of out of the machine by the root's default route.
  ip route replace "$(pool "$i")" via "$(addr "$i")" dev "$BRIDGE"
}

teardown_host_net() {
  local i="$1" ns
  ns="$(ns_name "$i")"
  ip link del "ddv$i" 2>/dev/null || true
  if host_exists "$i"; then ip netns del "$ns"; fi
  rm -f "$STATE_DIR/ddh$i.hosts" "$STATE_DIR/ddh$i.resolv.conf"
  # The engine's runtime state (its mounts lived in its own mount namespace, gone with it).
  if [[ -z "$(engine_pids "$i")" ]]; then rm -rf "$(exec_root "$i")"; fi
}

# Starts host i's dockerd in the background; a second argument "append" keeps the log of the last run
# (start-engine after stop-engine), otherwise the log starts afresh.
launch_engine() {
  local i="$1" mode="${2:-}" ns log
  ns="$(ns_name "$i")"
  log="$(engine_log "$i")"
  mkdir -p "$(data_root "$i")" "$(exec_root "$i")"
  rm -f "$(pidfile "$i")"
  if [[ "$mode" != append ]]; then : >"$log"; fi
  echo "=== $(date -Is) netns_hosts.sh: starting the engine of $ns" >>"$log"
  # A private mount namespace (so the bind mounts stay this engine's own) and UTS namespace (hostname).
  # Same engine flags as the main engine here: no iptables, no default bridge; "nvidia" is an alias
  # of runc (GPU discovery's probe path runs, finds no device); dockerd runs its own containerd.
  # --tls=false: a plain TCP listener without it makes dockerd sleep 15 s at start.
  # shellcheck disable=SC2016
  setsid nsenter --net="/run/netns/$ns" unshare --mount --uts sh -c '
      set -e
      mount --make-rprivate /
      hostname "$1"
      mount --bind "$2" /etc/resolv.conf
      mount --bind "$3" /etc/hosts
      shift 3
      exec "$@"' sh "$ns" "$STATE_DIR/$ns.resolv.conf" "$STATE_DIR/$ns.hosts" \
    dockerd \
    --data-root "$(data_root "$i")" \
    --exec-root "$(exec_root "$i")" \
    --pidfile "$(pidfile "$i")" \
    -H "unix://$(sock "$i")" \
    -H "tcp://$(addr "$i"):$ENGINE_PORT" \
    --tls=false \
    --iptables=false \
    --ip-masq=false \
    --bridge=none \
    --add-runtime "nvidia=runc" \
    --default-address-pool "base=$(pool "$i"),size=24" \
    >>"$log" 2>&1 </dev/null 9>&- &
  disown "$!"  # no "Killed" notice from this shell when stop-engine or a rollback kills it
}

wait_engines() {
  local deadline i pending
  deadline=$((SECONDS + START_TIMEOUT_S))
  while :; do
    pending=()
    for i in "$@"; do engine_answers "$i" || pending+=("$i"); done
    ((${#pending[@]})) || return 0
    if ((SECONDS >= deadline)); then break; fi
    sleep 0.2
  done
  for i in "${pending[@]}"; do
    echo "engine of $(ns_name "$i") did not answer at $(url "$i") within ${START_TIMEOUT_S}s; log tail ($(engine_log "$i")):" >&2
    tail -n 30 "$(engine_log "$i")" >&2 || true
  done
  return 1
}

CREATED_HOSTS=()
CREATED_BRIDGE=0
CREATED_RULE=0
CREATED_DNS=0

rollback() {
  set +e
  local i
  echo "netns_hosts: start failed; tearing down what this run made" >&2
  for i in "${CREATED_HOSTS[@]}"; do kill_engine_hard "$i"; teardown_host_net "$i"; done
  if ((CREATED_DNS)) || [[ -z "$(hosts_up)" ]]; then stop_dns; fi
  if ((CREATED_BRIDGE)) || [[ -z "$(hosts_up)" ]]; then ip link del "$BRIDGE" 2>/dev/null; fi
  if ((CREATED_RULE)) || [[ -z "$(hosts_up)" ]]; then remove_rule; fi
  if [[ -z "$(hosts_up)" ]]; then rm -rf "$STATE_DIR"; else write_name_files; fi
}

start() {
  local n="${1:-}" i
  [[ "$n" =~ ^[1-9][0-9]*$ ]] && ((n <= MAX_HOSTS)) || die "usage: $0 start N  (N = 1..$MAX_HOSTS)"
  trap 'rc=$?; if ((rc != 0)); then rollback; fi' EXIT
  trap 'exit 130' INT TERM
  command -v dockerd >/dev/null || die "dockerd is missing (apt-get install docker.io)"
  ensure_dnsmasq
  mkdir -p "$STATE_DIR"
  chmod 0755 "$STATE_DIR"
  # The fence first, then the bridge and the hosts.
  ensure_rule
  ensure_bridge
  for i in $(seq 1 "$n"); do
    if ! host_exists "$i"; then CREATED_HOSTS+=("$i"); fi
    setup_host_net "$i"
  done
  write_name_files
  start_dns
  for i in $(seq 1 "$n"); do
    if engine_answers "$i"; then continue; fi
    # A dockerd that still runs but does not answer (starting, or hung) is left to answer or time out.
    if pid_alive "$(cat "$(pidfile "$i")" 2>/dev/null || true)"; then continue; fi
    kill_engine_hard "$i"  # leftovers of an engine that died
    launch_engine "$i"
  done
  wait_engines $(seq 1 "$n")
  trap - EXIT INT TERM
  for i in $(seq 1 "$n"); do echo "$(ns_name "$i") up: $(url "$i")"; done
}

stop() {
  local up=() i
  mapfile -t up < <(hosts_up)
  # Engines also of hosts whose namespace is already gone (a half torn-down state).
  for i in $(seq 1 "$MAX_HOSTS"); do
    if [[ -f "$(pidfile "$i")" ]] && ! printf '%s\n' "${up[@]}" | grep -qx "$i"; then up+=("$i"); fi
  done
  if ((${#up[@]})); then stop_engines "${up[@]}"; fi
  stop_dns
  for i in $(seq "$MAX_HOSTS" -1 1); do teardown_host_net "$i"; done
  ip link del "$BRIDGE" 2>/dev/null || true
  remove_rule
  rm -rf "$STATE_DIR"
  echo "namespace hosts stopped"
}

stop_engine() {
  local i="${1:-}"
  [[ "$i" =~ ^[1-9]$ ]] && ((i <= MAX_HOSTS)) || die "usage: $0 stop-engine I  (I = 1..$MAX_HOSTS)"
  kill_engine_hard "$i"
  echo "engine of $(ns_name "$i") killed"
}

start_engine() {
  local i="${1:-}"
  [[ "$i" =~ ^[1-9]$ ]] && ((i <= MAX_HOSTS)) || die "usage: $0 start-engine I  (I = 1..$MAX_HOSTS)"
  host_exists "$i" || die "host $(ns_name "$i") is not up (run: $0 start $i)"
  if ! engine_answers "$i"; then
    if ! pid_alive "$(cat "$(pidfile "$i")" 2>/dev/null || true)"; then
      kill_engine_hard "$i"
      launch_engine "$i" append
    fi
    # A restart after a hard kill recovers containerd's state first; on a loaded machine that has been
    # seen to outlast dockerd's wait for containerd ("timeout waiting for containerd to start"): once
    # more from scratch before giving up.
    if ! wait_engines "$i" 2>/dev/null; then
      echo "engine of $(ns_name "$i") did not come back; starting it once more" >&2
      kill_engine_hard "$i"
      launch_engine "$i" append
      wait_engines "$i"
    fi
  fi
  echo "$(ns_name "$i") up: $(url "$i")"
}

urls() {
  local i
  for i in $(hosts_up); do url "$i"; done
}

status() {
  local i any=0 rc=0
  for i in $(hosts_up); do
    any=1
    if engine_answers "$i"; then
      echo "$(ns_name "$i") $(url "$i") answers"
    else
      echo "$(ns_name "$i") $(url "$i") DOWN"
      rc=1
    fi
  done
  ((any)) || { echo "no namespace hosts up"; return 1; }
  return "$rc"
}

[[ "$(id -u)" -eq 0 ]] || die "needs root"
# One invocation at a time (the engines and dnsmasq are started with this descriptor closed).
mkdir -p "$(dirname "$LOCK")"
exec 9>"$LOCK"
flock 9

case "${1:-}" in
  start) start "${2:-}" ;;
  stop) stop ;;
  stop-engine) stop_engine "${2:-}" ;;
  start-engine) start_engine "${2:-}" ;;
  urls) urls ;;
  status) status ;;
  *) echo "usage: $0 start N|stop|stop-engine I|start-engine I|urls|status" >&2; exit 2 ;;
esac
