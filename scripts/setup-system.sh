#!/usr/bin/env bash
# The system parts pip cannot install. Safe to run again: it installs only what is missing.
#
#   bubblewrap (bwrap)  isolates student code while `course grade` runs it (Linux namespaces);
#                       the grading tests fail without it.
#   chromium            the browser the tests in tests/browser/ drive through Playwright
#                       (a student's JupyterLab: Run All, widgets, nbgrader's Validate button).
#   postgresql          a gradebook shared by several instructors (`course grade --db
#                       postgresql://...`); the gradebook tests start a throwaway server with
#                       its initdb and pg_ctl (they skip without them).
#
# With root or sudo it installs them with apt-get (Debian, Ubuntu) or dnf (Fedora, RHEL) and
# prints what it installs. Otherwise it prints the command to run and exits 1. On macOS and
# Windows there is nothing to install: grading cannot isolate student code there (it says so,
# and the tests that need Linux are skipped with that reason), and the browser tests use the
# Chromium or Chrome already installed, or skip saying it is missing.
set -euo pipefail

if [ "$(uname -s)" != "Linux" ]; then
  echo "setup-system: $(uname -s) has no bubblewrap: \`course grade\` cannot isolate student"
  echo "  code here (grade on Linux); the browser tests use an installed Chrome or Chromium."
  exit 0
fi

missing=()
command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  missing+=(chromium)
fi
if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
    && ! ls /usr/pgsql-*/bin/initdb >/dev/null 2>&1; then
  missing+=(postgresql)
fi
if [ ${#missing[@]} -eq 0 ]; then
  echo "setup-system: bubblewrap, chromium and postgresql are installed"
  exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  as_root=(sudo)
else
  as_root=(none)
fi

if command -v apt-get >/dev/null 2>&1; then
  steps=("apt-get update -qq" "apt-get install -y -qq --no-install-recommends ${missing[*]}")
elif command -v dnf >/dev/null 2>&1; then
  steps=("dnf install -y -q ${missing[*]/postgresql/postgresql-server}")  # initdb is there
else
  echo "setup-system: missing ${missing[*]}, and neither apt-get nor dnf is here."
  echo "  Install them with your package manager: bubblewrap isolates student code while"
  echo "  grading, chromium runs the browser tests, postgresql holds a shared gradebook."
  exit 1
fi

if [ "${as_root[0]:-}" = none ]; then
  echo "setup-system: missing ${missing[*]} (bubblewrap isolates student code while grading;"
  echo "  chromium runs the browser tests; postgresql holds a shared gradebook). Install as"
  echo "  root, then run this again:"
  printf '    sudo %s\n' "${steps[@]}"
  exit 1
fi

echo "setup-system: installing ${missing[*]} (bubblewrap: grading; chromium: browser tests;"
echo "  postgresql: a shared gradebook and its tests)"
for step in "${steps[@]}"; do
  echo "  ${as_root[*]:+${as_root[*]} }$step"
  # shellcheck disable=SC2086  # each step is a plain command line
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive $step
done
echo "setup-system: installed ${missing[*]}"
