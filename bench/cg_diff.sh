#!/usr/bin/env bash
# Per-function instructions per request from two callgrind runs of the same
# process serving N and M requests (bench/compare.sh with KEEP=1 leaves them
# in its temp dir): (Ir_N(f) - Ir_M(f)) / (N - M), most expensive first.
#
#   bench/cg_diff.sh callgrind.sidekey.plain.1000.out 1000 callgrind.sidekey.plain.200.out 200 [TOP]
#
# Self cost by default; INCLUSIVE=1 for inclusive cost.
set -euo pipefail
[[ $# -ge 4 ]] || { sed -n '2,8p' "$0"; exit 2; }
n_file=$1 n=$2 m_file=$3 m=$4 top=${5:-40}
incl=no
[[ "${INCLUSIVE:-0}" == 1 ]] && incl=yes
# "Ir<TAB>function" for every function callgrind_annotate lists.
annotate() {
    callgrind_annotate --auto=no --inclusive="$incl" --threshold=100 "$1" 2>/dev/null |
        awk '/^ *[0-9][0-9,]* / {
            v = $1; gsub(",", "", v)
            line = $0; sub(/^ *[0-9,]+ +(\([^)]*\) +)?/, "", line)
            print v "\t" line }'
}
awk -F'\t' -v d=$((n - m)) '
    NR == FNR { a[$2] += $1; next }
    { b[$2] += $1 }
    END {
        for (k in a) printf "%10.1f\t%s\n", (a[k] - b[k]) / d, k
        for (k in b) if (!(k in a)) printf "%10.1f\t%s\n", -b[k] / d, k
    }' <(annotate "$n_file") <(annotate "$m_file") | sort -g -r | head -n "$top"
