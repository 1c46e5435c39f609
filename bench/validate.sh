#!/usr/bin/env bash
# Benchmark: validating every certificate on a token, against listing it.
#
#   bench/validate.sh [-n RUNS] [-c CERTS] [-b P11SMIME_BINARY]
#
# Provisions a fresh SoftHSM token (softhsm-conf/provision.sh) in a temp dir,
# adds CERTS (default 500) S/MIME certificates issued by the test CA (as
# bench/list.sh does, with bench/import_certs.c), then times, interleaved,
# RUNS (default 7) times each, against the SoftHSM module directly:
#   p11smime --json list --login            (enumeration and pairing)
#   p11smime --json validate                (login, every rule, key checks,
#                                            chain to the CA on the token)
#   p11smime --json list                    (no login)
#   p11smime --json validate --no-login     (rules and chain, no key checks)
# and prints each median, the certificate counts, and the ratios of
# validate to list.  Figures are recorded by hand in docs/performance.md.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
src=$(cd "$here/.." && pwd)
. "$here/lib.sh"
runs=7
ncerts=500
bin=${P11SMIME:-$src/build/p11smime}
while getopts "n:c:b:" o; do
	case $o in
	n) runs=$OPTARG ;;
	c) ncerts=$OPTARG ;;
	b) bin=$OPTARG ;;
	*) echo "usage: $0 [-n RUNS] [-c CERTS] [-b P11SMIME]" >&2; exit 2 ;;
	esac
done
[ -x "$bin" ] || { echo "validate.sh: no p11smime binary at $bin (build first, or -b PATH)" >&2; exit 2; }
for t in openssl cc jq awk; do
	command -v "$t" >/dev/null || { echo "validate.sh: $t is required" >&2; exit 2; }
done
module=/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so

work=$(mktemp -d "${TMPDIR:-/tmp}/p11s-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
tok=$work/token

echo "== setup: token with $ncerts extra certificates and the CA certificate"
t0=$(date +%s%N)
bash "$src/softhsm-conf/provision.sh" "$tok" >/dev/null
. "$tok/env"
bench_issue_certs "$work" "$tok" "$ncerts"
# The CA too, so that every chain is built to an anchor found on the token.
openssl x509 -in "$tok/ca/ca.pem" -outform DER -out "$work/certs/zz-ca.der"
bench_import "$work" "$module" "$work"/certs/*.der
t1=$(date +%s%N)
awk -v ns=$((t1 - t0)) 'BEGIN { printf "setup took %.1f s\n", ns / 1e9 }'

want=$((ncerts + 5))
names=(list-login validate list validate-no-login)
run_one() { # NAME -> output in $work/out.NAME; validate exits 1 if anything is rejected
	local rc=0
	case $1 in
	list-login) "$bin" --module "$module" --pin-source "file:$P11S_PIN_FILE" --json list --login \
		>"$work/out.$1" 2>"$work/err.$1" || rc=$? ;;
	validate) "$bin" --module "$module" --pin-source "file:$P11S_PIN_FILE" --json validate \
		>"$work/out.$1" 2>"$work/err.$1" || rc=$? ;;
	list) "$bin" --module "$module" --json list >"$work/out.$1" 2>"$work/err.$1" || rc=$? ;;
	validate-no-login) "$bin" --module "$module" --json validate --no-login \
		>"$work/out.$1" 2>"$work/err.$1" || rc=$? ;;
	esac
	[ $rc = 0 ] || [ $rc = 1 ]
}
count_of() {
	case $1 in
	list*) jq '[.objects[] | select(.class == "certificate")] | length' "$work/out.$1" ;;
	validate*) jq '.certificates | length' "$work/out.$1" ;;
	esac
}

echo "== $runs runs each, interleaved"
declare -A times
for _ in $(seq 1 "$runs"); do
	for n in "${names[@]}"; do
		s=$(date +%s%N)
		if ! run_one "$n"; then
			echo "$n failed:" >&2
			cat "$work/err.$n" >&2
			exit 1
		fi
		e=$(date +%s%N)
		times[$n]="${times[$n]:-} $(((e - s) / 1000))"
	done
done

median_ms() {
	# shellcheck disable=SC2086
	printf '%s\n' $1 | sort -n | awk '{a[NR] = $1} END {
		m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2; printf "%.1f", m / 1000 }'
}
declare -A med
printf '%-18s %10s %8s\n' run "median ms" certs
for n in "${names[@]}"; do
	med[$n]=$(median_ms "${times[$n]}")
	c=$(count_of "$n")
	printf '%-18s %10s %8s\n' "$n" "${med[$n]}" "$c"
	[ "$c" = "$want" ] || echo "  warning: $n reported $c certificates, expected $want" >&2
done
chains=$(jq '[.certificates[] | select(.chain.result == "pass")] | length' "$work/out.validate")
keyed=$(jq '[.certificates[] | select(.key.present == true)] | length' "$work/out.validate")
echo "validate: $chains chains built, $keyed certificates with their key on the token"
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
per() { awk -v a="$1" -v n="$2" 'BEGIN { printf "%.3f", a / n }'; }
echo "== ratios"
echo "validate / list --login              $(ratio "${med[validate]}" "${med[list-login]}")"
echo "validate --no-login / list           $(ratio "${med[validate-no-login]}" "${med[list]}")"
echo "validate, ms per certificate         $(per "${med[validate]}" "$want")"
