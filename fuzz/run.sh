#!/usr/bin/env bash
# Builds the libFuzzer harnesses (FuzzFernet, FuzzJSON) and runs each for a bounded time.
#
#   fuzz/run.sh [seconds-per-fuzzer]      (default 60)
#
# Build: swift build -c release --scratch-path .build-fuzz -Xswiftc -sanitize=fuzzer
#        -Xswiftc -parse-as-library --product <each fuzzer>, inside fuzz/ (the repository's
#        own .build is never touched).
# If the toolchain rejects -sanitize=fuzzer, the same harnesses are built with
# -DFUZZ_STANDALONE into a plain executable that replays the corpus and then runs seeded
# random mutations of it for the same time (no coverage guidance; says so).
#
# Each fuzzer starts from the committed seeds in corpus/<name>/ and keeps what it learns in
# .build-fuzz/corpus/<name>/ (ignored by git). A crashing input is saved to
# .build-fuzz/artifacts/ and printed; the script then exits 1. Environment:
#   FUZZ_RSS_LIMIT_MB (2048), FUZZ_TIMEOUT (per-input seconds, 10), FUZZ_MAX_LEN (8192),
#   FUZZ_TARGETS ("FuzzFernet FuzzJSON"), FUZZ_SEED (libFuzzer -seed; random by default).
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"
seconds="${1:-60}"
targets="${FUZZ_TARGETS:-FuzzFernet FuzzJSON FuzzReplication}"
scratch="$here/.build-fuzz"
rss="${FUZZ_RSS_LIMIT_MB:-2048}"
timeout_s="${FUZZ_TIMEOUT:-10}"
max_len="${FUZZ_MAX_LEN:-8192}"

declare -A corpus_of=([FuzzFernet]=fernet [FuzzJSON]=json [FuzzReplication]=replication)

# Pin the dependency versions to the root package's when it has resolved them.
if [[ ! -f Package.resolved && -f ../Package.resolved ]]; then
    cp ../Package.resolved Package.resolved
fi

mode=libfuzzer
build_log="$(mktemp)"
trap 'rm -f "$build_log"' EXIT
echo "fuzz/run.sh: building with -sanitize=fuzzer (scratch path .build-fuzz)"
build_start=$(date +%s)
build_ok=0
# One product at a time: a plain `swift build` would also link the root package's own
# `secureconf` executable, which cannot link with -sanitize=fuzzer -parse-as-library.
build_products() {
    local t
    for t in $targets; do
        swift build -c release --scratch-path "$scratch" --product "$t" "$@" >>"$build_log" 2>&1 || return 1
    done
}
for attempt in 1 2 3; do
    : >"$build_log"
    if build_products -Xswiftc -sanitize=fuzzer -Xswiftc -parse-as-library; then
        build_ok=1
        break
    fi
    if grep -qiE "sanitize=fuzzer|unsupported option|libclang_rt.fuzzer|fuzzer.*not supported" "$build_log"; then
        break
    fi
    # The root package is edited concurrently: a half-saved file can break one build; retry.
    echo "fuzz/run.sh: build attempt $attempt failed; retrying in 20 s. Last lines:"
    tail -15 "$build_log"
    sleep 20
done
if [[ $build_ok -eq 0 ]]; then
    if grep -qiE "sanitize=fuzzer|unsupported option|libclang_rt.fuzzer|fuzzer.*not supported" "$build_log"; then
        echo "fuzz/run.sh: the toolchain rejects -sanitize=fuzzer:"
        grep -iE "sanitize|fuzzer" "$build_log" | head -5
        echo "fuzz/run.sh: falling back to the standalone seeded random harness (no coverage guidance)"
        mode=standalone
        scratch="$here/.build-fuzz-standalone"
        : >"$build_log"
        if ! build_products -Xswiftc -parse-as-library -Xswiftc -DFUZZ_STANDALONE -Xcc -DFUZZ_STANDALONE; then
            tail -40 "$build_log"
            echo "fuzz/run.sh: standalone build failed" >&2
            exit 2
        fi
    else
        tail -40 "$build_log"
        echo "fuzz/run.sh: build failed" >&2
        exit 2
    fi
fi
echo "fuzz/run.sh: built in $(( $(date +%s) - build_start )) s ($mode)"

bin="$(swift build -c release --scratch-path "$scratch" --show-bin-path 2>/dev/null)"
mkdir -p "$scratch/artifacts"
status=0
summary=()
for t in $targets; do
    seeds="$here/corpus/${corpus_of[$t]}"
    work="$scratch/corpus/${corpus_of[$t]}"
    mkdir -p "$work"
    log="$scratch/$t.log"
    echo
    echo "=== $t: ${seconds} s ($mode), seeds $seeds ==="
    if [[ $mode == libfuzzer ]]; then
        seed_arg=()
        [[ -n "${FUZZ_SEED:-}" ]] && seed_arg=(-seed="$FUZZ_SEED")
        "$bin/$t" -max_total_time="$seconds" -rss_limit_mb="$rss" -timeout="$timeout_s" -max_len="$max_len" \
            -print_final_stats=1 -artifact_prefix="$scratch/artifacts/$t-" "${seed_arg[@]}" "$work" "$seeds" \
            >"$log" 2>&1
        rc=$?
        execs=$(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}')
        [[ -z "$execs" ]] && execs=$(grep -oE '#[0-9]+' "$log" | tail -1 | tr -d '#')
        cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1)
        grep -E '^#[0-9]+.*(INITED|DONE)' "$log" | tail -2
    else
        "$bin/$t" --seconds "$seconds" --seed "${FUZZ_SEED:-1}" "$seeds" >"$log" 2>&1
        rc=$?
        execs=$(grep -oE 'executions: [0-9]+' "$log" | tail -1 | awk '{print $2}')
        cov="no coverage (standalone)"
    fi
    if [[ $rc -ne 0 ]]; then
        status=1
        echo "fuzz/run.sh: $t FAILED (exit $rc) after ${execs:-?} executions; log $log:"
        grep -E 'ERROR|Fatal error|precondition|SUMMARY|Test unit written|Base64|panic|crash' "$log" | head -20
        for a in "$scratch"/artifacts/"$t"-*; do
            [[ -f "$a" ]] || continue
            echo "--- crashing input $a ($(stat -c %s "$a") bytes):"
            head -c 512 "$a" | od -A d -t x1z | head -20
        done
        summary+=("$t: CRASH after ${execs:-?} executions (see $log)")
    else
        summary+=("$t: ${execs:-?} executions in ${seconds} s, ${cov:-}, corpus $(ls "$work" | wc -l) inputs, no crash")
    fi
done

# Known crashes (see known-crashes/README.md): each must still crash with FUZZ_KNOWN_BUGS=1;
# one that no longer does means the bug is fixed and its guard in the harness can go.
declare -A target_of=([fernet]=FuzzFernet [json]=FuzzJSON [replication]=FuzzReplication)
for f in "$here"/known-crashes/*; do
    name="$(basename "$f")"
    [[ -f "$f" && "$name" != *.md ]] || continue
    t="${target_of[${name%%-*}]:-}"
    [[ -n "$t" && " $targets " == *" $t "* ]] || continue
    if [[ $mode == libfuzzer ]]; then
        (FUZZ_KNOWN_BUGS=1 "$bin/$t" -runs=1 "$f"; exit $?) >"$scratch/known-$name.log" 2>&1
    else
        (FUZZ_KNOWN_BUGS=1 "$bin/$t" "$f"; exit $?) >"$scratch/known-$name.log" 2>&1
    fi
    if [[ $? -ne 0 ]]; then
        summary+=("known crash $name ($t): still crashes -- the reported bug is not fixed yet (known-crashes/README.md)")
    else
        status=1
        summary+=("known crash $name ($t): NO LONGER CRASHES -- the bug looks fixed; remove the guard in $t and known-crashes/$name")
    fi
done

echo
printf 'fuzz/run.sh: %s\n' "${summary[@]}"
exit $status
