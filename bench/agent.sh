#!/usr/bin/env bash
# Benchmark: batch signing and p11smime agent against the token's own speed.
#
#   bench/agent.sh [-n MESSAGES] [-r RUNS] [-s SECONDS] [-p PAIRS] [-b P11SMIME_BINARY] [-B]
#
# On one fresh SoftHSM token (softhsm-conf/provision.sh), in one run:
#
# (1) the token's raw signing rate: C_SignInit/C_Sign in a loop on one
#     logged-in session (bench/csign.c, compiled on the fly), RSA-2048
#     CKM_RSA_PKCS over a SHA-256 DigestInfo and P-256 CKM_ECDSA, SECONDS
#     (default 3) each; and the same from one thread and session per
#     processor (what the token gives a batch's workers);
# (2) batch signing: `p11smime sign --out-dir DIR` of MESSAGES (default 1000)
#     4 KiB mails with each key, with the default workers and with --jobs 1,
#     messages per second as a ratio of the raw one-session rate: the whole
#     batch's rate, and the rate beyond a one-file batch's time (module,
#     C_Initialize, login, signer: the setup that (1)'s loop does not time
#     either).  Each ratio is paired: the raw loop runs 1 s just before and
#     just after each batch, the batch's rate is divided by their mean, and
#     the median of PAIRS (default 3) such ratios is printed (this VM's
#     speed drifts by up to 2x within minutes: a raw rate taken once, at
#     the start, moved the ratios by a third); beside them, what the
#     output directory's file system gives without any signing: as many
#     new 6 KiB files made durable and linked in as a batch makes them
#     (bench/mkfiles.c), taken before the batches;
# (3) one process per message: median wall time of `p11smime sign` through
#     `p11smime agent` against `openssl cms -sign -engine pkcs11` (libp11's
#     engine, key on the token), RUNS (default 21) paired runs, alternating;
#     then (3') the same timed with bash's $EPOCHREALTIME, without the forks
#     of date(1) that the first figures include, and beside them the agent's
#     client writing to standard output redirected to the file (no fsync
#     and no rename, as openssl writes -out; -o FILE is made durable);
# (4) throughput through the agent, one process per message: 1 client
#     against 4 clients at once (MESSAGES/4 per client... at least 40 each);
#     beside it the same for /bin/true, what starting processes alone gives
#     from 4 loops at once on this machine: the ceiling of (4);
# (4b) the agent's own concurrency, without a process per message: 4 batch
#     clients at once (`sign --jobs 1 --out-dir`, MESSAGES/4 files each, a
#     request per file) against one batch of MESSAGES files, PAIRS times.
#
# -B runs (1) and (2) only: the batch against the token, no agent.
#
# Goals from issue 12: (2) RSA >= 0.85, P-256 >= 0.6; (3) <= 0.35;
# (4) >= 1.5.  The last lines print each goal with the figure it is judged
# on, "met" or "MISSED": (2) on the whole batch, its setup counted; (3) on
# the fork-free timing of (3'), -o FILE and > FILE; (4) a process a message,
# beside what /bin/true allows, and (4b) the agent's own concurrency.
# Figures are recorded by hand in docs/performance.md.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
src=$(cd "$here/.." && pwd)
msgs=1000
runs=21
secs=3
pairs=3
bin=${P11SMIME:-$src/build/p11smime}
batch_only=0
while getopts "n:r:s:b:p:B" o; do
	case $o in
	n) msgs=$OPTARG ;;
	p) pairs=$OPTARG ;;
	r) runs=$OPTARG ;;
	s) secs=$OPTARG ;;
	b) bin=$OPTARG ;;
	B) batch_only=1 ;;
	*) echo "usage: $0 [-n MESSAGES] [-r RUNS] [-s SECONDS] [-p PAIRS] [-b P11SMIME] [-B]" >&2; exit 2 ;;
	esac
done
[ -x "$bin" ] || { echo "agent.sh: no p11smime binary at $bin (build first, or -b PATH)" >&2; exit 2; }
[ -f /usr/lib/x86_64-linux-gnu/engines-3/pkcs11.so ] ||
	{ echo "agent.sh: libp11's engine is required (apt-get install libengine-pkcs11-openssl)" >&2; exit 2; }
command -v cc >/dev/null || { echo "agent.sh: a C compiler is required" >&2; exit 2; }
module=/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so

work=$(mktemp -d "${TMPDIR:-/tmp}/p11s-bench-agent.XXXXXX")
agent_pid=
cleanup() {
	[ -n "$agent_pid" ] && kill -TERM "$agent_pid" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT
tok=$work/token
bash "$src/softhsm-conf/provision.sh" "$tok" >/dev/null
. "$tok/env"
pin=$(head -n1 "$P11S_PIN_FILE")
export P11SMIME_MODULE=$module
unset P11SMIME_AGENT_SOCK P11SMIME_AGENT_PID

now_ns() { date +%s%N; }
median() { sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

# 4 KiB mails.
mkdir -p "$work/in" "$work/out"
{
	printf 'From: rsa2048@example.org\nTo: bob@example.net\nSubject: benchmark\n'
	printf 'Date: Sat, 28 Nov 2026 09:00:00 +0000\nMessage-ID: <bench@example.org>\n'
	printf 'MIME-Version: 1.0\nContent-Type: text/plain; charset=us-ascii\n\n'
	for i in $(seq 1 60); do
		printf 'Line %02d of a four kilobyte benchmark message, plain 7-bit text here.\n' "$i"
	done
} >"$work/mail.long"
head -c 4095 "$work/mail.long" >"$work/mail.eml"
echo >>"$work/mail.eml"
for i in $(seq 1 "$msgs"); do cp "$work/mail.eml" "$work/in/m$i.eml"; done

# ------------------------------------------------------------ (1) raw C_Sign
# p11-kit's pkcs11.h, wherever pkg-config says it is (as tools/ci-extra.sh builds it).
p11kit_cflags=$(pkg-config --cflags p11-kit-1 2>/dev/null) ||
	{ echo "agent.sh: pkg-config knows no p11-kit-1 (apt-get install pkg-config libp11-kit-dev)" >&2; exit 2; }
cc -O2 $p11kit_cflags -o "$work/csign" "$here/csign.c" -ldl -lpthread
cc -O2 -o "$work/mkfiles" "$here/mkfiles.c"
raw_rsa=$("$work/csign" "$module" "$P11S_TOKEN_LABEL" "$P11S_PIN_FILE" 01 rsa "$secs")
raw_ec=$("$work/csign" "$module" "$P11S_TOKEN_LABEL" "$P11S_PIN_FILE" 03 ec "$secs")
# The same from as many threads, each on its own session, as a batch has
# workers by default: the most the token gives them (its own locks included).
ncpu=$(nproc)
raw_rsa_n=$("$work/csign" "$module" "$P11S_TOKEN_LABEL" "$P11S_PIN_FILE" 01 rsa "$secs" "$ncpu")
raw_ec_n=$("$work/csign" "$module" "$P11S_TOKEN_LABEL" "$P11S_PIN_FILE" 03 ec "$secs" "$ncpu")
echo "== (1) the token's raw C_SignInit/C_Sign rate, one session, ${secs} s each"
printf 'RSA-2048 CKM_RSA_PKCS (SHA-256 DigestInfo)   %8.1f /s\n' "$raw_rsa"
printf 'P-256 CKM_ECDSA (32-byte hash)               %8.1f /s\n' "$raw_ec"
printf 'RSA-2048, %d threads, a session each         %8.1f /s\n' "$ncpu" "$raw_rsa_n"
printf 'P-256, %d threads, a session each            %8.1f /s\n' "$ncpu" "$raw_ec_n"

# ---------------------------------------------------------------- (2) batch
# Each batch writes into a directory of its own, all removed at the end:
# deleting the previous batch's outputs just before made each new file's
# inode cost a scan past them (ext4 without a journal skips recently
# deleted inodes when it allocates: recently_deleted() in find_inode_bit()),
# up to half of a P-256 batch's CPU time on the development VM.
batch_us() { # SIGNER JOBS FILE... -> microseconds
	local t0 t1 out signer=$1 jobs=$2
	shift 2
	out=$(mktemp -d "$work/out/b.XXXXXX")
	# $EPOCHREALTIME (microseconds, no fork): date(1)'s own start would
	# be counted in the batch's time.
	t0=${EPOCHREALTIME//[.,]/}
	"$bin" --pin-source "file:$P11S_PIN_FILE" sign --no-agent ${jobs:+--jobs "$jobs"} --signer "$signer" \
		--out-dir "$out" "$@"
	t1=${EPOCHREALTIME//[.,]/}
	openssl cms -verify -in "$out/m1.eml" -CAfile "$tok/ca/ca.pem" -out /dev/null 2>/dev/null ||
		{ echo "agent.sh: the batch's output does not verify" >&2; exit 1; }
	echo $((t1 - t0))
}
# A batch of the MESSAGES files, and the same batch of one file (median of
# 5): the fixed part (load the module, C_Initialize, log in, open the
# signer), which the raw loop of (1) leaves out too.  Each batch of the
# MESSAGES files sits between two 1-second raw loops on the same key; per
# pair: the batch's messages per second, the rate of the messages beyond
# the fixed part ((MESSAGES - 1) / (batch time - one-file time)), the mean
# raw rate, and both rates' ratios to it.  Prints the median of each.
batch() { # SIGNER KEY_ID rsa|ec [JOBS] -> "RATE BEYOND ONE_MS RAW RATIO RATIO_BEYOND RATIOS..."
	local all one before after p
	one=$(for i in 1 2 3 4 5; do batch_us "$1" "${4:-}" "$work/in/m1.eml"; done | median)
	for p in $(seq 1 "$pairs"); do
		before=$("$work/csign" "$module" "$P11S_TOKEN_LABEL" "$P11S_PIN_FILE" "$2" "$3" 1)
		all=$(batch_us "$1" "${4:-}" "$work"/in/*.eml)
		after=$("$work/csign" "$module" "$P11S_TOKEN_LABEL" "$P11S_PIN_FILE" "$2" "$3" 1)
		awk -v n="$msgs" -v a="$all" -v o="$one" -v b="$before" -v f="$after" 'BEGIN {
			rate = n / (a / 1e6); beyond = (a > o ? (n - 1) / ((a - o) / 1e6) : 0); raw = (b + f) / 2
			printf "%.1f %.1f %.1f %.4f %.4f\n", rate, beyond, raw, rate / raw, beyond / raw }'
	done >"$work/pairs"
	awk -v o="$one" '{ for (c = 1; c <= 5; c++) v[c, NR] = $c; r = r sprintf(" %.2f", $4) }
		function med(c,   i, j, t, a) {
			for (i = 1; i <= NR; i++) a[i] = v[c, i]
			for (i = 2; i <= NR; i++) for (j = i; j > 1 && a[j - 1] > a[j]; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
			return (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }
		END { printf "%.1f %.1f %.1f %.1f %.2f %.2f%s", med(1), med(2), o / 1000, med(3), med(4), med(5), r }' "$work/pairs"
}
show() { # LABEL "RATE BEYOND ONE_MS RAW RATIO RATIO_BEYOND RATIOS..." [GOAL]
	local label=$1 goal=${3:-}
	set -- $2
	local rate=$1 beyond=$2 one=$3 raw=$4 ratio=$5 rbeyond=$6
	shift 6
	awk -v l="$label" -v b="$rate" -v s="$beyond" -v o="$one" -v w="$raw" -v r="$ratio" -v rs="$rbeyond" \
		-v g="$goal" -v all="$*" 'BEGIN {
		printf "%-20s %8.1f msg/s  raw %8.1f /s  ratio %.2f;  beyond the one-file batch (%.1f ms): %8.1f msg/s  ratio %.2f%s  (pairs: %s)\n",
			l, b, w, r, o, s, rs, (g != "" ? "  (goal >= " g ")" : ""), all }'
}
# Issue 12's goals, printed together at the end, each "met" or "MISSED".
: >"$work/goals"
goal() { # ">=|<=" FIGURE GOAL TEXT
	awk -v op="$1" -v f="$2" -v g="$3" -v t="$4" 'BEGIN {
		ok = (op == ">=") ? (f + 0 >= g + 0) : (f + 0 <= g + 0)
		printf "%-64s %5.2f  %s %.2f  %s\n", t, f, op, g, ok ? "met" : "MISSED" }' >>"$work/goals"
}
goals() {
	echo "== issue 12's goals on this run"
	cat "$work/goals"
}
# The output file system alone: as many new files as a batch makes, of a
# signed mail's size, made durable and linked in as a batch does
# (bench/mkfiles.c).  On this VM's ext4 (no journal) each new inode costs
# a read past every inode deleted in its group in the last minutes
# (recently_deleted() in find_inode_bit()): a test suite run just before
# slows every figure on ext4 here, whatever p11smime does.
# Taken before the batches, and its files kept to the end (deleting them
# would slow the batches' new inodes the same way).
fs_rate() { # DIR -> "FILES_PER_S CPU_US_PER_FILE"
	"$work/mkfiles" "$1/fs" "$msgs" 6144
}
fs_disk=$(fs_rate "$work/out")
# The default --jobs (the processors online) and one worker (--jobs 1).
b_rsa=$(batch rsa2048@example.org 01 rsa)
b_ec=$(batch p256@example.org 03 ec)
b1_rsa=$(batch rsa2048@example.org 01 rsa 1)
b1_ec=$(batch p256@example.org 03 ec 1)
echo "== (2) sign --out-dir, $msgs messages of 4 KiB, one process, into a new directory in $work (durable: one syncfs per 32 outputs); ratios to the raw one-session rate around each batch, median of $pairs pairs"
show "RSA-2048, $ncpu workers" "$b_rsa" 0.85
show "P-256, $ncpu workers" "$b_ec" 0.6
show "RSA-2048, --jobs 1" "$b1_rsa"
show "P-256, --jobs 1" "$b1_ec"
printf 'the file system alone: %s new files of 6 KiB made durable and linked in as a batch does, no signing (bench/mkfiles.c): %.1f files/s, %.1f us of CPU each\n' \
	"$msgs" ${fs_disk}
# The goal is judged on the whole batch (its setup counted), the stricter figure.
set -- $b_rsa
goal ">=" "$5" 0.85 "(2) batch RSA-2048 / raw C_Sign, whole, disk"
set -- $b_ec
goal ">=" "$5" 0.6 "(2) batch P-256 / raw C_Sign, whole, disk (beyond setup: $6)"
awk -v b="${b_rsa%% *}" -v rn="$raw_rsa_n" -v e="${b_ec%% *}" -v en="$raw_ec_n" -v n="$ncpu" \
	'BEGIN { printf "to the raw rate from %d threads, taken once in (1): RSA-2048 %.2f, P-256 %.2f\n", n, b / rn, e / en }'
# The same into tmpfs: what the disk's syncs cost, apart from the work.
if [ -d /dev/shm ] && [ -w /dev/shm ]; then
	shm=$(mktemp -d /dev/shm/p11s-bench-agent.XXXXXX)
	mv "$work/out" "$work/out.disk" && ln -s "$shm" "$work/out"
	fs_shm=$(fs_rate "$shm")
	s_rsa=$(batch rsa2048@example.org 01 rsa)
	s_ec=$(batch p256@example.org 03 ec)
	rm -f "$work/out" && mv "$work/out.disk" "$work/out"
	rm -rf "$shm"
	echo "== (2b) the same into tmpfs (/dev/shm), default workers"
	printf 'the file system alone (tmpfs): %.1f files/s, %.1f us of CPU each\n' ${fs_shm}
	show "RSA-2048" "$s_rsa" 0.85
	show "P-256" "$s_ec" 0.6
	set -- $s_rsa
	goal ">=" "$5" 0.85 "(2b) batch RSA-2048 / raw C_Sign, whole, tmpfs"
	set -- $s_ec
	goal ">=" "$5" 0.6 "(2b) batch P-256 / raw C_Sign, whole, tmpfs (beyond setup: $6)"
fi

rm -rf "$work/out" && mkdir "$work/out"
if [ "$batch_only" = 1 ]; then
	goals
	exit 0
fi

# ------------------------------------------------- (3) latency through the agent
eval "$("$bin" --pin-source "file:$P11S_PIN_FILE" agent --signer rsa2048@example.org)" >/dev/null
agent_pid=$P11SMIME_AGENT_PID
cert=$tok/certs/rsa2048.pem
key_uri="pkcs11:token=$P11S_TOKEN_LABEL;id=%01;type=private;pin-value=$pin"
cat >"$work/engine.cnf" <<EOF
openssl_conf = oc
[oc]
engines = es
[es]
pkcs11 = p11
[p11]
engine_id = pkcs11
MODULE_PATH = $module
init = 0
EOF
agent_sign() { "$bin" sign --signer rsa2048@example.org -i "$1" -o "$2"; }
# To standard output redirected to the file: no fsync and no rename, as
# openssl writes its -out (-o FILE is made durable before it is renamed in).
agent_stdout() { "$bin" sign --signer rsa2048@example.org -i "$1" >"$2"; }
ossl_sign() {
	OPENSSL_CONF=$work/engine.cnf openssl cms -sign -engine pkcs11 -keyform engine -inkey "$key_uri" \
		-signer "$cert" -md sha256 -in "$1" -out "$2" 2>/dev/null
}
agent_sign "$work/mail.eml" "$work/a.agent"
ossl_sign "$work/mail.eml" "$work/a.ossl"
for f in a.agent a.ossl; do
	openssl cms -verify -in "$work/$f" -CAfile "$tok/ca/ca.pem" -out /dev/null 2>/dev/null ||
		{ echo "agent.sh: $f does not verify" >&2; exit 1; }
done
: >"$work/t.agent"
: >"$work/t.ossl"
for i in $(seq 1 "$runs"); do
	for who in agent ossl; do
		[ $((i % 2)) = 0 ] && who=$([ $who = agent ] && echo ossl || echo agent)
		t0=$(now_ns)
		"${who}_sign" "$work/mail.eml" "$work/out.$who"
		t1=$(now_ns)
		echo $(((t1 - t0) / 1000)) >>"$work/t.$who"
	done
done
ma=$(median <"$work/t.agent")
mo=$(median <"$work/t.ossl")
# What starting any process costs here (a loaded VM can make it most of the figure).
: >"$work/t.true"
for i in $(seq 1 "$runs"); do
	t0=$(now_ns)
	/bin/true
	t1=$(now_ns)
	echo $(((t1 - t0) / 1000)) >>"$work/t.true"
done
mt=$(median <"$work/t.true")
echo "== (3) one process per 4 KiB message, RSA-2048, $runs paired runs"
awk -v a="$ma" -v o="$mo" -v t="$mt" 'BEGIN {
	printf "p11smime sign through the agent      median %7.1f ms\n", a / 1000
	printf "openssl cms -sign -engine pkcs11     median %7.1f ms\n", o / 1000
	printf "/bin/true (starting a process)       median %7.1f ms\n", t / 1000
	printf "ratio agent / openssl                %.2f (goal <= 0.35)\n", a / o
	if (o > t) printf "ratio without the process start      %.2f\n", (a - t) / (o - t) }'

# The same with a fork-free timer: each $(date) above is itself a process
# start (~10 ms on a loaded VM), which swells both figures alike and pulls
# the ratio toward 1.  Bash's $EPOCHREALTIME (microseconds) costs no fork.
: >"$work/u.agent"
: >"$work/u.ossl"
: >"$work/u.true"
: >"$work/u.stdout"
for i in $(seq 1 "$runs"); do
	for who in agent ossl; do
		[ $((i % 2)) = 0 ] && who=$([ $who = agent ] && echo ossl || echo agent)
		t0=${EPOCHREALTIME//[.,]/}
		"${who}_sign" "$work/mail.eml" "$work/out.$who"
		t1=${EPOCHREALTIME//[.,]/}
		echo $((t1 - t0)) >>"$work/u.$who"
	done
	t0=${EPOCHREALTIME//[.,]/}
	agent_stdout "$work/mail.eml" "$work/out.stdout"
	t1=${EPOCHREALTIME//[.,]/}
	echo $((t1 - t0)) >>"$work/u.stdout"
	t0=${EPOCHREALTIME//[.,]/}
	/bin/true
	t1=${EPOCHREALTIME//[.,]/}
	echo $((t1 - t0)) >>"$work/u.true"
done
echo "== (3') the same, timed without forks (\$EPOCHREALTIME)"
openssl cms -verify -in "$work/out.stdout" -CAfile "$tok/ca/ca.pem" -out /dev/null 2>/dev/null ||
	{ echo "agent.sh: the agent's standard output does not verify" >&2; exit 1; }
u_agent=$(median <"$work/u.agent")
u_ossl=$(median <"$work/u.ossl")
u_stdout=$(median <"$work/u.stdout")
# Judged without forks: (3) counts date(1)'s own two process starts in each figure.
goal "<=" "$(awk -v a="$u_agent" -v o="$u_ossl" 'BEGIN { print a / o }')" 0.35 \
	"(3') agent -o FILE / openssl cms -engine, per process, no forks"
goal "<=" "$(awk -v a="$u_stdout" -v o="$u_ossl" 'BEGIN { print a / o }')" 0.35 \
	"(3') agent > FILE / openssl cms -engine (neither synced)"
awk -v a="$u_agent" -v o="$u_ossl" -v t="$(median <"$work/u.true")" \
	-v so="$u_stdout" 'BEGIN {
	printf "p11smime sign through the agent      median %7.1f ms\n", a / 1000
	printf "openssl cms -sign -engine pkcs11     median %7.1f ms\n", o / 1000
	printf "/bin/true (starting a process)       median %7.1f ms\n", t / 1000
	printf "ratio agent / openssl                %.2f (goal <= 0.35)\n", a / o
	printf "through the agent > FILE             median %7.1f ms (no fsync, as openssl -out)\n", so / 1000
	printf "ratio agent > FILE / openssl         %.2f\n", so / o }'

# ------------------------------------------ (4) 4 concurrent clients against 1
per=$((msgs / 4))
[ "$per" -lt 40 ] && per=40
client() { # N TAG
	for i in $(seq 1 "$1"); do agent_sign "$work/mail.eml" "$work/out/c$2-$i.eml"; done
}
t0=$(now_ns)
client $((per * 2)) one
t1=$(now_ns)
one=$(awk -v n="$((per * 2))" -v ns="$((t1 - t0))" 'BEGIN { printf "%.1f", n / (ns / 1e9) }')
t0=$(now_ns)
pids=()
for c in 1 2 3 4; do
	client $((per / 2)) "four$c" &
	pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
t1=$(now_ns)
four=$(awk -v n="$((per * 2))" -v ns="$((t1 - t0))" 'BEGIN { printf "%.1f", n / (ns / 1e9) }')
# The machine's own ceiling for that: the same loops of /bin/true.
truel() { for i in $(seq 1 "$1"); do /bin/true; done; }
t0=$(now_ns)
truel $((per * 2))
t1=$(now_ns)
tone=$(awk -v n="$((per * 2))" -v ns="$((t1 - t0))" 'BEGIN { printf "%.1f", n / (ns / 1e9) }')
t0=$(now_ns)
pids=()
for c in 1 2 3 4; do
	truel $((per / 2)) &
	pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
t1=$(now_ns)
tfour=$(awk -v n="$((per * 2))" -v ns="$((t1 - t0))" 'BEGIN { printf "%.1f", n / (ns / 1e9) }')
goal ">=" "$(awk -v a="$one" -v b="$four" 'BEGIN { print b / a }')" 1.5 \
	"(4) 4 clients / 1, a process a message ($(awk -v a="$tone" -v b="$tfour" 'BEGIN { printf "/bin/true: %.2f", b / a }'))"
echo "== (4) through the agent, one process per message, $((per * 2)) messages ($(nproc) CPUs)"
awk -v a="$one" -v b="$four" -v ta="$tone" -v tb="$tfour" 'BEGIN {
	printf "1 client                  %7.1f msg/s\n", a
	printf "4 clients at once         %7.1f msg/s\n", b
	printf "ratio 4 / 1               %.2f (goal >= 1.5)\n", b / a
	printf "/bin/true, 1 loop         %7.1f /s\n", ta
	printf "/bin/true, 4 loops        %7.1f /s\n", tb
	printf "ratio 4 / 1               %.2f (what starting processes allows here)\n", tb / ta }'

# ------------------------- (4b) 4 batch clients through the agent against 1
# No process per message: each client is one `sign --jobs 1 --out-dir`
# sending a request per file, so this is the agent's concurrency (its
# session pool and threads) and the token's.
quarter=$((msgs / 4))
[ "$quarter" -lt 1 ] && quarter=1
all_in=("$work"/in/*.eml)
agent_batch_us() { # JOBS FILE... -> microseconds of one batch client through the agent
	local t0 t1 out jobs=$1
	shift
	out=$(mktemp -d "$work/out/a.XXXXXX")
	t0=${EPOCHREALTIME//[.,]/}
	"$bin" sign ${jobs:+--jobs "$jobs"} --signer rsa2048@example.org --out-dir "$out" "$@"
	t1=${EPOCHREALTIME//[.,]/}
	echo $((t1 - t0))
}
: >"$work/pairs4"
for p in $(seq 1 "$pairs"); do
	a1=$(agent_batch_us 1 "${all_in[@]:0:$((quarter * 4))}")
	t0=${EPOCHREALTIME//[.,]/}
	pids=()
	for c in 0 1 2 3; do
		agent_batch_us 1 "${all_in[@]:$((c * quarter)):$quarter}" >/dev/null &
		pids+=($!)
	done
	for q in "${pids[@]}"; do wait "$q"; done
	t1=${EPOCHREALTIME//[.,]/}
	ad=$(agent_batch_us "" "${all_in[@]:0:$((quarter * 4))}")
	echo "$a1 $((t1 - t0)) $ad" >>"$work/pairs4"
done
for d in "$work"/out/a.*; do
	openssl cms -verify -in "$(ls "$d"/*.eml | head -n1)" -CAfile "$tok/ca/ca.pem" -out /dev/null 2>/dev/null ||
		{ echo "agent.sh: an agent batch's output does not verify" >&2; exit 1; }
done
echo "== (4b) through the agent, no process per message: batch clients (sign --jobs 1 --out-dir), RSA-2048, $((quarter * 4)) messages, median of $pairs pairs"
awk -v n="$((quarter * 4))" -v j="$ncpu" '{ one[NR] = n / ($1 / 1e6); four[NR] = n / ($2 / 1e6); dj[NR] = n / ($3 / 1e6); r[NR] = $1 / $2; rs = rs sprintf(" %.2f", $1 / $2) }
	function med(a,   i, j, t) {
		for (i = 2; i <= NR; i++) for (j = i; j > 1 && a[j - 1] > a[j]; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
		return (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }
	END {
		printf "1 batch client            %7.1f msg/s\n", med(one)
		printf "4 batch clients at once   %7.1f msg/s\n", med(four)
		printf "ratio 4 / 1               %.2f (goal >= 1.5; pairs:%s)\n", med(r), rs
		printf "1 batch client, %d jobs    %7.1f msg/s (its requests at once)\n", j, med(dj) }' "$work/pairs4"
goal ">=" "$(awk '{ r[NR] = $1 / $2 }
	END { for (i = 2; i <= NR; i++) for (j = i; j > 1 && r[j - 1] > r[j]; j--) { t = r[j]; r[j] = r[j - 1]; r[j - 1] = t }
		print (NR % 2) ? r[(NR + 1) / 2] : (r[NR / 2] + r[NR / 2 + 1]) / 2 }' "$work/pairs4")" 1.5 \
	"(4b) 4 batch clients / 1 through the agent"
goals
