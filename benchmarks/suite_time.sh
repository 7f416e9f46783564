#!/usr/bin/env bash
# The test suite's wall time and CPU seconds for two revisions side by side, in alternating order: the user and
# system seconds of pytest and the processes it waited for (workers, CLI processes), and the busy seconds of the
# whole machine over the run (which also counts JVMs nobody waits for; meaningful on an otherwise quiet machine).
# Each round checks the revision out into a fresh clone and runs the pytest command of that revision's `make test`
# there, on this checkout's environments (.venv, .venv35 and their jars, linked in; the clone's src/ first on the
# path), so only the tests and the code differ, not the set-up (benchmarks/make_env.sh times that). Extra arguments
# go to pytest (e.g. `-k scoring` for a part of the suite). The environments are brought up to date first with this
# checkout's `make test` set-up steps; each run's pytest output is kept as /tmp/suite-time-REV.log. A single
# revision is timed alone (e.g. a part of the suite: `benchmarks/suite_time.sh HEAD -- -m e2e`).
#
#   benchmarks/suite_time.sh OLD_REV [NEW_REV [ROUNDS]] [-- PYTEST_ARGS...]
set -euo pipefail
positional=()
while (($#)) && [[ $1 != -- ]]; do positional+=("$1"); shift; done
[[ ${1:-} == -- ]] && shift
old=${positional[0]} new=${positional[1]:-} rounds=${positional[2]:-1}
repo=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)

# this checkout's set-up steps of `make test` (the environments the clones share), as make_env.sh reads them
sed -n '/^test:/,/^$/p' "$repo/Makefile" | grep -E '^\s+\$\(MAKE\)' | sed -e 's/^\s*\$(MAKE)//' |
    while read -r targets; do eval "make -C '$repo' -s $targets" >/dev/null </dev/null; done

echo "date: $(date -u '+%Y-%m-%d %H:%M') UTC; machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.1f GiB", $2/2^20}' /proc/meminfo)"

busy_seconds() {  # CPU seconds all processes on the machine have spent (user, nice, system, irq, softirq, steal)
    awk -v hz="$(getconf CLK_TCK)" '/^cpu / {print ($2 + $3 + $4 + $7 + $8 + $9) / hz}' /proc/stat
}

time_one() {  # rev [pytest args]
    local rev=$1 dir line args=""
    shift
    (($#)) && args=$(printf '%q ' "$@")  # quoted again for `bash -c` (e.g. -m "not e2e")
    dir=$(mktemp -d /tmp/suite-time-XXXXXX)
    git clone -q "$repo" "$dir" && git -C "$dir" checkout -q "$rev"
    ln -s "$repo/.venv" "$dir/.venv"
    [[ -d $repo/.venv35 ]] && ln -s "$repo/.venv35" "$dir/.venv35"
    # the recipe's last command (its environment variables and pytest's options), joined from its lines
    line=$(cd "$dir" && make -n test 2>/dev/null | sed -n '/^SPARKSHIP_REQUIRE/,/-m pytest/p' | tr -d '\\\n')
    (
        cd "$dir"
        export PYTHONPATH="$dir/src"
        local before
        before=$(busy_seconds)
        /usr/bin/time -f "$rev	%e s wall	%U s user	%S s system" -o "$dir/time.txt" \
            bash -c "$line $args" > "$dir/pytest.log" 2>&1 || true
        printf '%s\t%.0f s machine CPU\t%s\t(%s)\n' "$(tail -1 time.txt)" "$(echo "$(busy_seconds) - $before" | bc)" \
            "$(grep -E '(passed|failed)' pytest.log | tail -1)" "$(date +%T)"
        cp pytest.log "/tmp/suite-time-$rev.log"
    )
    rm -rf "$dir"
}

if [[ -z $new ]]; then
    time_one "$old" "$@"
    exit
fi
for ((round = 0; round < rounds; round++)); do
    if ((round % 2 == 0)); then time_one "$old" "$@"; time_one "$new" "$@"; else time_one "$new" "$@"; time_one "$old" "$@"; fi
done
