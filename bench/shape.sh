#!/bin/sh
# bench/shape.sh -- dss_bench's output with the measured figures taken out,
# to check that a change to the bench keeps its table's shape (sections, row
# ids, columns, notes): every number not part of a name (C12, F1, p99)
# becomes N, and every rate "N /s".
#   bench/shape.sh before.txt > a; bench/shape.sh after.txt > b; diff a b
sed -E -e 's/(^|[^A-Za-z0-9.])-?[0-9]+(\.[0-9]+)?/\1N/g' -e 's/N (M|k) ?\/s/N \/s/g' "$@"
