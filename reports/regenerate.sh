#!/usr/bin/env bash
# Regenerates every example report in reports/ from a clean, committed tree, all at one revision:
#
#     bash reports/regenerate.sh            (about half an hour on 2 cores)
#
# Every shipped scenario runs at full size into results/examples/ (--force: nothing is reused
# from an earlier revision) and writes its report to reports/<scenario>/.  The BBOB suite is
# about 3 CPU-hours at full size, so its example report is the --quick study (its manifest says
# so); run it at full size with --workers or on Ray.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "$(git status --porcelain --untracked-files=no -- . ':(exclude)reports')" ]; then
    echo "reports/regenerate.sh: commit first: example reports come from a clean tree" >&2
    exit 2
fi
mapfile -t full < <(ls scenarios/*.toml | grep -v '/suite_bbob\.toml$')
evosgd run "${full[@]}" --out results/examples --force --report --report-dir reports --workers 2 --no-progress
evosgd run scenarios/suite_bbob.toml --quick --out results/examples-quick --force --report --report-dir reports \
    --workers 2 --no-progress
