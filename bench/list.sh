#!/usr/bin/env bash
# Benchmark: listing a token with many certificates.
#
#   bench/list.sh [-n RUNS] [-c CERTS] [-b P11SMIME_BINARY] [-r REF_BINARY] [-k DIR]
#
# -r REF_BINARY also times another p11smime (say, a build of the previous
# commit) the same way, interleaved with the rest, for before/after ratios.
# -k DIR keeps the bench token in DIR and reuses it on the next run with -k
# DIR (setup takes ~20 s).
# Provisions a fresh SoftHSM token (softhsm-conf/provision.sh) in a temp dir,
# adds CERTS (default 500) S/MIME certificates issued by the test CA for a
# few keys (distinct subjects, serials, SAN addresses and CKA_IDs), then
# times, interleaved, RUNS (default 7) times each:
#   p11smime --json list                      (certificates are public objects)
#   p11smime --json list --login              (private keys and pairing too)
#   pkcs11-tool --list-objects --type cert
#   p11tool --list-all-certs
# all against the SoftHSM module directly (no proxy), and prints each median
# (wall time, and CPU time = user + sys, steadier on a busy machine), the
# certificate counts each tool reported, and the ratios.  Figures are
# recorded by hand in docs/performance.md.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
src=$(cd "$here/.." && pwd)
. "$here/lib.sh"
runs=7
ncerts=500
bin=${P11SMIME:-$src/build/p11smime}
keep=''
ref=''
while getopts "n:c:b:r:k:" o; do
	case $o in
	n) runs=$OPTARG ;;
	c) ncerts=$OPTARG ;;
	b) bin=$OPTARG ;;
	r) ref=$OPTARG ;;
	k) keep=$OPTARG ;;
	*) echo "usage: $0 [-n RUNS] [-c CERTS] [-b P11SMIME] [-r REF_P11SMIME] [-k DIR]" >&2; exit 2 ;;
	esac
done
[ -x "$bin" ] || { echo "list.sh: no p11smime binary at $bin (build first, or -b PATH)" >&2; exit 2; }
[ -z "$ref" ] || [ -x "$ref" ] || { echo "list.sh: no p11smime binary at $ref (-r)" >&2; exit 2; }
for t in pkcs11-tool p11tool openssl cc jq awk; do
	command -v "$t" >/dev/null || { echo "list.sh: $t is required" >&2; exit 2; }
done
module=/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so

work=$(mktemp -d "${TMPDIR:-/tmp}/p11s-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
tok=$work/token
[ -n "$keep" ] && tok=$keep

if [ -n "$keep" ] && [ -f "$keep/bench-$ncerts" ]; then
	echo "== reusing the bench token in $keep"
	. "$tok/env"
else
	echo "== setup: token with $ncerts extra certificates"
	t0=$(date +%s%N)
	bash "$src/softhsm-conf/provision.sh" "$tok" >/dev/null
	. "$tok/env"
	bench_issue_certs "$work" "$tok" "$ncerts"
	bench_import "$work" "$module" "$work"/certs/*.der
	t1=$(date +%s%N)
	awk -v ns=$((t1 - t0)) 'BEGIN { printf "setup took %.1f s\n", ns / 1e9 }'

	[ -z "$keep" ] || : >"$keep/bench-$ncerts"
fi

want=$((ncerts + 4))
names=(p11smime p11smime-login pkcs11-tool p11tool)
[ -z "$ref" ] || names+=(ref ref-login)
run_one() { # NAME -> command output in $work/out.NAME
	case $1 in
	p11smime) "$bin" --module "$module" --json list >"$work/out.$1" 2>"$work/err.$1" ;;
	p11smime-login) "$bin" --module "$module" --pin-source "file:$P11S_PIN_FILE" --json list --login \
		>"$work/out.$1" 2>"$work/err.$1" ;;
	ref) "$ref" --module "$module" --json list >"$work/out.$1" 2>"$work/err.$1" ;;
	ref-login) "$ref" --module "$module" --pin-source "file:$P11S_PIN_FILE" --json list --login \
		>"$work/out.$1" 2>"$work/err.$1" ;;
	pkcs11-tool) pkcs11-tool --module "$module" --token-label "$P11S_TOKEN_LABEL" --list-objects \
		--type cert >"$work/out.$1" 2>"$work/err.$1" ;;
	p11tool) p11tool --provider "$module" --list-all-certs "pkcs11:token=$P11S_TOKEN_LABEL" \
		</dev/null >"$work/out.$1" 2>"$work/err.$1" ;;
	esac
}
count_of() {
	case $1 in
	p11smime | p11smime-login | ref | ref-login) jq '[.objects[] | select(.class == "certificate")] | length' "$work/out.$1" ;;
	pkcs11-tool) grep -c '^Certificate Object' "$work/out.$1" ;;
	p11tool) grep -c 'URL: pkcs11:' "$work/out.$1" ;;
	esac
}

echo "== $runs runs each, interleaved"
declare -A times cpus
TIMEFORMAT='%R %U %S'
for _ in $(seq 1 "$runs"); do
	for n in "${names[@]}"; do
		if ! { time run_one "$n"; } 2>"$work/time.$n"; then
			echo "$n failed:" >&2
			cat "$work/err.$n" >&2
			exit 1
		fi
		read -r real user sys <"$work/time.$n"
		times[$n]="${times[$n]:-} $real"
		cpus[$n]="${cpus[$n]:-} $(awk -v u="$user" -v s="$sys" 'BEGIN { print u + s }')"
	done
done

median_ms() { # seconds -> median in ms
	# shellcheck disable=SC2086
	printf '%s\n' $1 | sort -g | awk '{a[NR] = $1} END {
		m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2; printf "%.1f", m * 1000 }'
}
declare -A med medcpu
printf '%-16s %10s %10s %8s\n' tool "wall ms" "cpu ms" certs
for n in "${names[@]}"; do
	med[$n]=$(median_ms "${times[$n]}")
	medcpu[$n]=$(median_ms "${cpus[$n]}")
	c=$(count_of "$n")
	printf '%-16s %10s %10s %8s\n' "$n" "${med[$n]}" "${medcpu[$n]}" "$c"
	[ "$c" = "$want" ] || echo "  warning: $n reported $c certificates, expected $want" >&2
done
if [ -n "$ref" ]; then
	# The same document, or the comparison means nothing.
	cmp -s "$work/out.p11smime" "$work/out.ref" || echo "  warning: $bin and $ref print different lists" >&2
fi
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }
echo "== ratios of medians, wall (cpu); below 1: the first is faster"
pairs=("p11smime pkcs11-tool" "p11smime-login pkcs11-tool" "p11smime p11tool" "p11smime-login p11tool")
[ -z "$ref" ] || pairs+=("ref pkcs11-tool" "p11smime ref" "p11smime-login ref-login")
for pair in "${pairs[@]}"; do
	read -r a b <<<"$pair"
	printf '%-30s %s (%s)\n' "$a / $b" "$(ratio "${med[$a]}" "${med[$b]}")" \
		"$(ratio "${medcpu[$a]}" "${medcpu[$b]}")"
done
