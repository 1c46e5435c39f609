#!/usr/bin/env bash
# Benchmark: mail through Postfix with and without `p11smime milter`.
#
#   bench/milter.sh [-n MESSAGES] [-c CLIENTS] [-r ROUNDS] [-b P11SMIME_BINARY]
#
# As root (Postfix).  Provisions a fresh SoftHSM token in a temp dir, starts
# a private Postfix instance relaying to smtp-sink (tests/integration/
# postfix.sh: config, queue and sink under the temp dir, loopback ports
# only), and sends MESSAGES (default 400) small mails (about 900 bytes)
# from CLIENTS (default 4) concurrent SMTP clients, each over its own
# connection, several messages a connection (tests/integration/
# smtp_send.py).  Messages per second are counted to the MTA's 250 after
# DATA, which Postfix gives only once the milter has answered.
#
# ROUNDS (default 3) alternate: Postfix without a milter, then with the
# milter signing for rsa2048@example.org (RSA-2048 on the token), then
# p256@example.org (ECDSA P-256).  Prints the median of each and the ratio
# signed/unsigned.  Use a release build (-b build/p11smime); an ASan build
# is several times slower.
#
# Figures are recorded by hand in docs/performance.md.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
src=$(cd "$here/.." && pwd)
count=400
clients=4
rounds=3
bin=${P11SMIME:-$src/build/p11smime}
while getopts "n:c:r:b:" o; do
	case $o in
	n) count=$OPTARG ;;
	c) clients=$OPTARG ;;
	r) rounds=$OPTARG ;;
	b) bin=$OPTARG ;;
	*) echo "usage: $0 [-n MESSAGES] [-c CLIENTS] [-r ROUNDS] [-b P11SMIME]" >&2; exit 2 ;;
	esac
done
[ "$(id -u)" = 0 ] || { echo "milter.sh: run as root (a private Postfix instance)" >&2; exit 2; }
[ -x "$bin" ] || { echo "milter.sh: no p11smime binary at $bin (build first, or -b PATH)" >&2; exit 2; }
command -v postfix >/dev/null && command -v smtp-sink >/dev/null ||
	{ echo "milter.sh: postfix is required (tools/install-deps.sh)" >&2; exit 2; }
module=/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so
send=$src/tests/integration/smtp_send.py
. "$src/tests/integration/postfix.sh"

work=$(mktemp -d "${TMPDIR:-/tmp}/p11s-bench-milter.XXXXXX")
chmod 755 "$work"
mpid=
stop_milter() {
	[ -n "$mpid" ] || return 0
	kill -TERM "$mpid" 2>/dev/null || true
	wait "$mpid" 2>/dev/null || true
	mpid=
}
stop_all() {
	stop_milter
	pf_stop
}
trap 'stop_all; rm -rf "$work"' EXIT
tok=$work/token
bash "$src/softhsm-conf/provision.sh" "$tok" >/dev/null
. "$tok/env"
export SOFTHSM2_CONF

median() { sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

# One Postfix with the milter configured, one without; both stay up.
mport=$(free_port)
pf_start "$work/plain" ""
plain_port=$PF_PORT
plain_pf=$PF_DIR
plain_sink=$PF_SINK_PID
PF_SINK_PID=
pf_start "$work/signed" "inet:127.0.0.1:$mport"
signed_port=$PF_PORT
stop_all() {
	stop_milter
	pf_stop
	PF_DIR=$plain_pf PF_SINK_PID=$plain_sink pf_stop
}
"$bin" --module "$module" --pin-source "file:$P11S_PIN_FILE" milter \
	--listen "inet:$mport@127.0.0.1" >"$work/milter.log" 2>&1 &
mpid=$!
for _ in $(seq 100); do
	grep -q "listening on" "$work/milter.log" && break
	sleep 0.1
done
grep -q "listening on" "$work/milter.log" || { cat "$work/milter.log"; exit 1; }

# Warm both up (process start, TLS-free session caches, the token's first use).
python3 "$send" --bench "$plain_port" "$clients" 20 bench@example.org >/dev/null
python3 "$send" --bench "$signed_port" "$clients" 20 rsa2048@example.org >/dev/null

: >"$work/rate-plain" && : >"$work/rate-rsa" && : >"$work/rate-ec"
for r in $(seq 1 "$rounds"); do
	python3 "$send" --bench "$plain_port" "$clients" "$count" bench@example.org >>"$work/rate-plain"
	python3 "$send" --bench "$signed_port" "$clients" "$count" rsa2048@example.org >>"$work/rate-rsa"
	python3 "$send" --bench "$signed_port" "$clients" "$count" p256@example.org >>"$work/rate-ec"
	echo "round $r: unsigned $(tail -n1 "$work/rate-plain")  RSA-2048 $(tail -n1 "$work/rate-rsa")  P-256 $(tail -n1 "$work/rate-ec") msg/s" >&2
done
signed=$(grep -c ': from=<.*> signed by' "$work/milter.log")
plain=$(median <"$work/rate-plain")
rsa=$(median <"$work/rate-rsa")
ec=$(median <"$work/rate-ec")
echo "messages: $count a run, $clients clients, median of $rounds runs ($signed signed by the milter)"
printf 'Postfix, no milter:           %8.1f msg/s\n' "$plain"
printf 'Postfix + milter, RSA-2048:   %8.1f msg/s  (%.2f of unsigned)\n' "$rsa" "$(awk -v a="$rsa" -v b="$plain" 'BEGIN { print a / b }')"
printf 'Postfix + milter, ECDSA P-256:%8.1f msg/s  (%.2f of unsigned)\n' "$ec" "$(awk -v a="$ec" -v b="$plain" 'BEGIN { print a / b }')"
