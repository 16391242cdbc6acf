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
#   configurable-http-proxy  JupyterHub's proxy (from npm, with Node.js and npm from the
#                       system's packages when they are missing): the students' hub of
#                       autograder/jupyterhub_config.py, and tests/browser/test_jupyterhub.py,
#                       which fails without it.
#
# With root or sudo it installs them with apt-get (Debian, Ubuntu) or dnf (Fedora, RHEL), and the
# proxy with `npm install -g`, and prints what it installs. Otherwise it prints the commands to
# run and exits 1. On macOS and Windows there is nothing to install: grading cannot isolate
# student code there (it says so, and the tests that need Linux are skipped with that reason),
# and the browser tests use the Chromium or Chrome already installed, or skip saying it is
# missing.
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
proxy=no  # configurable-http-proxy comes from npm, which needs Node.js
if ! command -v configurable-http-proxy >/dev/null 2>&1; then
  proxy=yes
  command -v node >/dev/null 2>&1 || missing+=(nodejs)
  command -v npm >/dev/null 2>&1 || missing+=(npm)
fi
if [ ${#missing[@]} -eq 0 ] && [ "$proxy" = no ]; then
  echo "setup-system: bubblewrap, chromium, postgresql and configurable-http-proxy are installed"
  exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  as_root=(sudo)
else
  as_root=(none)
fi

steps=()
if [ ${#missing[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1; then
    steps=("apt-get update -qq" "apt-get install -y -qq --no-install-recommends ${missing[*]}")
  elif command -v dnf >/dev/null 2>&1; then
    steps=("dnf install -y -q ${missing[*]/postgresql/postgresql-server}")  # initdb is there
  else
    echo "setup-system: missing ${missing[*]}, and neither apt-get nor dnf is here."
    echo "  Install them with your package manager: bubblewrap isolates student code while"
    echo "  grading, chromium runs the browser tests, postgresql holds a shared gradebook,"
    echo "  nodejs and npm install JupyterHub's configurable-http-proxy (npm install -g)."
    exit 1
  fi
fi
all=("${missing[@]}")
[ "$proxy" = no ] || all+=(configurable-http-proxy)

if [ "${as_root[0]:-}" = none ]; then
  echo "setup-system: missing ${all[*]} (bubblewrap isolates student code while grading;"
  echo "  chromium runs the browser tests; postgresql holds a shared gradebook;"
  echo "  configurable-http-proxy is JupyterHub's proxy). Install as root, then run this again:"
  [ ${#steps[@]} -eq 0 ] || printf '    sudo %s\n' "${steps[@]}"
  [ "$proxy" = no ] || echo "    sudo npm install -g configurable-http-proxy  # @4 on Node.js < 20"
  exit 1
fi

echo "setup-system: installing ${all[*]} (bubblewrap: grading; chromium: browser tests;"
echo "  postgresql: a shared gradebook and its tests; configurable-http-proxy: JupyterHub)"
for step in "${steps[@]}"; do
  echo "  ${as_root[*]:+${as_root[*]} }$step"
  # shellcheck disable=SC2086  # each step is a plain command line
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive $step
done
if [ "$proxy" = yes ]; then
  # configurable-http-proxy 5 needs Node.js 20; Debian 12's is 18, which runs version 4
  major=$(node -p 'process.versions.node.split(".")[0]')
  version=5
  [ "$major" -ge 20 ] || version=4
  echo "  ${as_root[*]:+${as_root[*]} }npm install -g configurable-http-proxy@$version"
  "${as_root[@]}" npm install -g --no-fund --no-audit --loglevel=error \
    "configurable-http-proxy@$version"
fi
echo "setup-system: installed ${all[*]}"
