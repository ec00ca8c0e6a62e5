# Sourced by the benchmark scripts that write a generated section into docs/BENCHMARKS.md:
# number formats for the tables, the commit to name, and the section writer.

# Each prints "–" for a value jq reported as null (a measure the run did not take).
ms() { awk -v us="$1" 'BEGIN { if (us == "null") print "–"; else printf "%.3f", us / 1000 }'; }
ratio() { awk -v b="$1" -v a="$2" 'BEGIN { if (a == "null" || b == "null" || a + 0 <= 0) print "–"; else printf "%.2f×", b / a }'; }
per_sec() { awk -v v="$1" 'BEGIN { if (v == "null") print "–"; else printf "%.0f", v }'; }
percent() { awk -v s="$1" 'BEGIN { if (s == "null") print "–"; else printf "%.0f%%", s * 100 }'; }
micros() { awk -v v="$1" 'BEGIN { if (v == "null") print "–"; else printf "%.2f", v }'; }

# The zoo commit the figures belong to: BENCH_ZOO_COMMIT where the tree is a copy without
# .git (another machine), else HEAD, marked when src/ has uncommitted changes.
zoo_commit() {
    if [ -n "${BENCH_ZOO_COMMIT:-}" ]; then
        echo "$BENCH_ZOO_COMMIT"
        return
    fi
    local commit
    commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
    if ! git diff --quiet HEAD -- src 2>/dev/null; then commit="$commit (with uncommitted changes)"; fi
    echo "$commit"
}

# Puts file $4 (which starts with line $2 and ends with line $3) in place of the lines from
# $2 to $3 in $1, or appends it if $1 has no such markers; creates $1 if missing.
write_section() {
    local doc=$1 begin=$2 end=$3 section=$4 tmp
    if [ ! -f "$doc" ]; then
        printf '# Benchmarks\n\n%s\n%s\n' "$begin" "$end" >"$doc"
    fi
    tmp=$(mktemp "${TMPDIR:-/tmp}/section.XXXXXX")
    if grep -qF "$begin" "$doc"; then
        awk -v begin="$begin" -v end="$end" -v section="$section" '
            $0 == begin { while ((getline line < section) > 0) print line; skipping = 1; next }
            $0 == end { skipping = 0; next }
            !skipping { print }
        ' "$doc" >"$tmp"
    else
        { cat "$doc"; echo; cat "$section"; } >"$tmp"
    fi
    cp "$tmp" "$doc"
    rm -f "$tmp"
}
