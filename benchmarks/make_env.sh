#!/usr/bin/env bash
# What `make test` spends before pytest starts (the venvs, Delta's jars, Chromium, the JVM class archive), for two
# revisions side by side: each round clones this repository afresh, checks out the revision and times
# `make test`'s own set-up steps (read from that revision's Makefile), in alternating order. pip's, Maven's and
# apt's caches are whatever this machine has.
#
#   benchmarks/make_env.sh OLD_REV NEW_REV [ROUNDS]
set -euo pipefail
old=$1 new=$2 rounds=${3:-2}
repo=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)

setup_steps() {  # the make commands of the `test:` recipe that come before pytest
    sed -n '/^test:/,/^$/p' Makefile | grep -E '^\s+\$\(MAKE\)' | sed -e 's/^\s*//' -e 's/\$(MAKE)/make/'
}

time_one() {  # rev
    local dir
    dir=$(mktemp -d /tmp/make-env-XXXXXX)
    git clone -q "$repo" "$dir" && git -C "$dir" checkout -q "$1"
    local started ended
    started=$(date +%s.%N)
    (cd "$dir" && setup_steps | while read -r step; do eval "$step" >/dev/null 2>&1 </dev/null; done)
    ended=$(date +%s.%N)
    printf '%s\t%.1f s\t(%s)\n' "$1" "$(echo "$ended - $started" | bc)" "$(date +%T)"
    rm -rf "$dir"
}

for ((round = 0; round < rounds; round++)); do
    if ((round % 2 == 0)); then time_one "$old"; time_one "$new"; else time_one "$new"; time_one "$old"; fi
done
