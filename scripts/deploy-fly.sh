#!/usr/bin/env bash
# Deploys Courier to Fly.io in one command (docs/deploy.md): creates the app if it is
# missing, creates or finds a Fly Managed Postgres cluster and attaches it, stages the
# secrets (the database URLs and an admin token), deploys fly.toml with Fly's remote
# builder, waits until the public URL's /readyz answers 200 and prints the URL.
#
# Idempotent: a second run finds the app, the cluster and the secrets and only deploys.
# --dry-run runs the read-only queries (who is logged in, which apps, clusters and
# secret names exist) and prints the commands that would change something instead of
# running them. Every flyctl command is printed on stdout as "+ flyctl ..." before it
# runs. Secret values are never printed: not by this script, and the output of the
# flyctl commands that print them (mpg create, mpg attach) is kept back.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: scripts/deploy-fly.sh --app NAME [--org ORG] [--region REGION]
                             [--database CLUSTER [--plan PLAN]
                              | --database-url URL [--database-direct-url URL]]
                             [--dry-run]

  --app NAME                 the Fly app (created if missing; app names are global)
  --org ORG                  the Fly organization for a new app and cluster (personal)
  --region REGION            primary region of the machines and of a new cluster
                             (default: fly.toml's primary_region)
  --database CLUSTER         the Fly Managed Postgres cluster (default: NAME-db),
                             created if missing and attached to the app
  --plan PLAN                the plan of a new cluster (basic)
  --database-url URL         use this PostgreSQL instead of a Managed Postgres cluster
                             (queries; may go through a pooler)
  --database-direct-url URL  the same database without a transaction pooler (LISTEN,
                             migrations); default: --database-url
  --dry-run                  run only read-only queries; print the changes instead
  -h, --help                 this text

Environment:
  COURIER_ADMIN_TOKEN        the admin API token to set (default: the app's, or a
                             new random one when the app has none)
  COURIER_DEPLOY_PUBLIC_URL  where to check /readyz (default: https://NAME.fly.dev)
  COURIER_DEPLOY_READY_TIMEOUT_SECS  how long to wait for /readyz (300)
EOF
}

die() {
  printf 'deploy-fly: %s\n' "$*" >&2
  exit 1
}

usage_error() {
  printf 'deploy-fly: %s\n\n' "$*" >&2
  usage >&2
  exit 2
}

# Hides credentials in URLs (postgres://user:password@host -> postgres://<redacted>@host).
redact() {
  sed -E 's#([a-z]+://)[^@/[:space:]]+@#\1<redacted>@#g'
}

app="" org="personal" region="" database="" plan="basic"
database_url="" database_direct_url="" dry_run=false
while [ "$#" -gt 0 ]; do
  case "$1" in
    -h | --help)
      usage
      exit 0
      ;;
    --dry-run)
      dry_run=true
      shift
      ;;
    --app | --org | --region | --database | --plan | --database-url | --database-direct-url)
      [ "$#" -ge 2 ] && [ -n "$2" ] || usage_error "$1 needs a value"
      case "$1" in
        --app) app=$2 ;;
        --org) org=$2 ;;
        --region) region=$2 ;;
        --database) database=$2 ;;
        --plan) plan=$2 ;;
        --database-url) database_url=$2 ;;
        --database-direct-url) database_direct_url=$2 ;;
      esac
      shift 2
      ;;
    *) usage_error "unknown argument: $1" ;;
  esac
done
[ -n "$app" ] || usage_error "--app is required"
[[ "$app" =~ ^[a-z0-9][a-z0-9-]*$ ]] ||
  usage_error "app name '$app': only lowercase letters, digits and hyphens"
if [ -n "$database_url" ] && [ -n "$database" ]; then
  usage_error "--database (a Managed Postgres cluster) and --database-url exclude each other"
fi
if [ -n "$database_direct_url" ] && [ -z "$database_url" ]; then
  usage_error "--database-direct-url needs --database-url"
fi

cd "$(dirname "$0")/.."
[ -f fly.toml ] || die "fly.toml is missing from $(pwd)"
if [ -z "$region" ]; then
  region=$(sed -n 's/^primary_region *= *"\([a-z0-9]*\)".*/\1/p' fly.toml)
  [ -n "$region" ] || die "fly.toml has no primary_region: pass --region"
fi
database=${database:-$app-db}
public_url=${COURIER_DEPLOY_PUBLIC_URL:-https://$app.fly.dev}
public_url=${public_url%/}
ready_timeout=${COURIER_DEPLOY_READY_TIMEOUT_SECS:-300}
# The server refuses an admin token under 32 characters: refuse it before changing anything.
if [ -n "${COURIER_ADMIN_TOKEN:-}" ] && [ "${#COURIER_ADMIN_TOKEN}" -lt 32 ]; then
  die "COURIER_ADMIN_TOKEN must be at least 32 characters (openssl rand -hex 32 makes one)"
fi
[[ "$ready_timeout" =~ ^[0-9]+$ ]] ||
  die "COURIER_DEPLOY_READY_TIMEOUT_SECS must be a number of seconds, not '$ready_timeout'"

# The tools: flyctl (also installed as `fly`), and jq, curl and openssl.
if command -v flyctl >/dev/null 2>&1; then
  flyctl=flyctl
elif command -v fly >/dev/null 2>&1; then
  flyctl=fly
else
  die "flyctl is not installed (neither flyctl nor fly is on PATH).
Install it (https://fly.io/docs/flyctl/install/): curl -L https://fly.io/install.sh | sh
or: brew install flyctl. Then log in: flyctl auth login"
fi
for tool in jq curl openssl; do
  command -v "$tool" >/dev/null 2>&1 ||
    die "$tool is not installed; it is needed too (Debian/Ubuntu: apt-get install $tool; macOS: brew install $tool)"
done

# Every flyctl command is printed on the script's standard output (fd 3), also from
# inside $(...).
exec 3>&1

# A flyctl query that changes nothing: printed, then run in every mode. Its standard
# output is the function's; its errors are left in $query_errors.
query_errors=$(mktemp)
trap 'rm -f "$query_errors"' EXIT
fly_query() {
  printf '+ %s %s\n' "$flyctl" "$*" >&3
  "$flyctl" "$@" 2>"$query_errors"
}

# A flyctl command that changes something: printed; run unless --dry-run. Its output
# is kept in $changed_output, not shown (mpg create and mpg attach print credentials).
changed_output=""
fly_change() {
  printf '+ %s %s\n' "$flyctl" "$*" >&3
  changed_output=""
  if [ "$dry_run" = true ]; then
    return 0
  fi
  changed_output=$("$flyctl" "$@" 2>&1)
}

# A read-only query on something only this run creates: in a dry run, printed only.
fly_query_later() {
  if [ "$dry_run" = true ]; then
    printf '+ %s %s\n' "$flyctl" "$*" >&3
    return 0
  fi
  fly_query "$@"
}

if [ "$dry_run" = true ]; then
  echo "Dry run: read-only queries run; the commands that would change something are printed, not run."
fi

# 1. Logged in?
if ! who=$(fly_query auth whoami); then
  die "not logged in to Fly.io ($flyctl auth whoami said: $(redact <"$query_errors" | tr '\n' ' '))
Log in first: $flyctl auth login"
fi
printf 'Logged in to Fly.io as %s\n' "$(printf '%s\n' "$who" | tail -n1)"

# 2. The app.
apps_json=$(fly_query apps list --json) ||
  die "cannot list your Fly apps: $(redact <"$query_errors")"
app_exists=false
if printf '%s' "$apps_json" |
  jq -e --arg app "$app" 'any(.[]; (.Name // .name) == $app)' >/dev/null 2>&1; then
  app_exists=true
fi
if [ "$app_exists" = true ]; then
  echo "App $app exists: updating it."
else
  echo "App $app does not exist: creating it in organization $org."
  if ! fly_change apps create "$app" --org "$org"; then
    if printf '%s' "$changed_output" | grep -qi 'already been taken'; then
      die "the app name '$app' is taken by another Fly.io account (app names are global, not per organization): choose another --app.
flyctl said: $(printf '%s' "$changed_output" | redact)"
    fi
    die "cannot create the app $app: $(printf '%s' "$changed_output" | redact)"
  fi
fi

# The app's secret names (none yet for an app this run creates).
secret_names=""
if [ "$app_exists" = true ]; then
  secrets_json=$(fly_query secrets list --app "$app" --json) ||
    die "cannot list the secrets of $app: $(redact <"$query_errors")"
  secret_names=$(printf '%s' "$secrets_json" | jq -r '.[] | (.Name // .name)' 2>/dev/null) ||
    die "cannot read the secrets list of $app (not JSON)"
fi
has_secret() {
  printf '%s\n' "$secret_names" | grep -qx "$1"
}

# The secrets this run sets, as NAME=VALUE lines, and their names.
staged=""
staged_names=()
stage() {
  staged+="$1=$2"$'\n'
  staged_names+=("$1")
}

# 3. PostgreSQL.
if [ -n "$database_url" ]; then
  # Given URLs are set on every run (the operator may be changing them).
  echo "PostgreSQL: the URLs given (no Managed Postgres cluster)."
  stage COURIER_DATABASE_URL "$database_url"
  stage COURIER_DATABASE_DIRECT_URL "${database_direct_url:-$database_url}"
else
  # Fly Managed Postgres: queries go through its PgBouncer (the pooled URL, which
  # `mpg attach` sets), LISTEN/NOTIFY and migrations to the server itself (the direct
  # URL). docs/deploy.md says why this offering.
  find_cluster() {
    local listed
    listed=$(fly_query mpg list --org "$org" --json) ||
      die "cannot list the Managed Postgres clusters of organization $org: $(redact <"$query_errors")"
    # With no cluster at all flyctl says so in words, not JSON: no match.
    printf '%s' "$listed" |
      jq -r --arg name "$database" '.[] | select(.name == $name) | .id' 2>/dev/null | head -n1 || true
  }
  cluster=$(find_cluster) || exit 1
  if [ -n "$cluster" ]; then
    echo "Managed Postgres cluster $database exists ($cluster)."
  else
    echo "Managed Postgres cluster $database does not exist: creating it in $region (plan $plan); this takes minutes."
    fly_change mpg create --name "$database" --org "$org" --region "$region" --plan "$plan" ||
      die "cannot create the Managed Postgres cluster $database in $region: $(printf '%s' "$changed_output" | redact)
Check the plan and region (flyctl mpg create --help), or use an existing database with --database-url."
    if [ "$dry_run" = true ]; then
      printf '+ %s %s\n' "$flyctl" "mpg list --org $org --json" >&3
      cluster="<id of the new cluster $database>"
    else
      cluster=$(find_cluster) || exit 1
      [ -n "$cluster" ] ||
        die "created the Managed Postgres cluster $database, but it is not listed in $org: run this script again"
    fi
  fi

  if has_secret COURIER_DATABASE_URL; then
    echo "The app has COURIER_DATABASE_URL: the cluster is attached."
  else
    fly_change mpg attach "$cluster" --app "$app" --variable-name COURIER_DATABASE_URL ||
      die "cannot attach the Managed Postgres cluster $database ($cluster) to $app: $(printf '%s' "$changed_output" | redact)
Check that the cluster is ready (flyctl mpg status $cluster) and belongs to an organization of the app."
  fi

  if has_secret COURIER_DATABASE_DIRECT_URL; then
    echo "The app has COURIER_DATABASE_DIRECT_URL."
  elif [ "$dry_run" = true ]; then
    fly_query_later mpg status "$cluster" --json
    stage COURIER_DATABASE_DIRECT_URL "<the cluster's direct URL>"
  else
    # The direct URL: the pooled one's credentials and database on the cluster's
    # `direct.` host instead of its `pgbouncer.` one (as Fly's dashboard shows both).
    status_json=$(fly_query mpg status "$cluster" --json) ||
      die "cannot read the Managed Postgres cluster $database ($cluster): $(redact <"$query_errors")"
    direct_url=$(printf '%s' "$status_json" | jq -r '
      .credentials as $c
      | ($c.pgbouncer_uri // "" | capture("^(?<scheme>[a-z]+)://([^@/]*@)?(?<host>[^/?]+)(?<rest>.*)$")) as $u
      | if ($u.host | startswith("pgbouncer.")) | not then empty else
          "\($u.scheme)://\($c.user | @uri):\($c.password | @uri)@direct.\($u.host | ltrimstr("pgbouncer."))/\($c.dbname | @uri)"
        end' 2>/dev/null || true)
    [ -n "$direct_url" ] ||
      die "cannot work out the direct URL of the cluster $database ($cluster) from flyctl mpg status.
Copy it from the cluster's Connect tab on fly.io and run: flyctl secrets set --app $app COURIER_DATABASE_DIRECT_URL=..."
    stage COURIER_DATABASE_DIRECT_URL "$direct_url"
  fi
fi

# 4. The admin token (the admin API on the private listener).
if [ -n "${COURIER_ADMIN_TOKEN:-}" ]; then
  stage COURIER_ADMIN_TOKEN "$COURIER_ADMIN_TOKEN"
elif has_secret COURIER_ADMIN_TOKEN; then
  echo "The app has COURIER_ADMIN_TOKEN: kept."
elif [ "$dry_run" = true ]; then
  stage COURIER_ADMIN_TOKEN "<new random token>"
else
  stage COURIER_ADMIN_TOKEN "$(openssl rand -hex 32)"
fi

# 5. Stage the secrets: values on standard input, never in a command line; they take
# effect with the deploy.
if [ "${#staged_names[@]}" -gt 0 ]; then
  printf '+ %s secrets import --stage --app %s <<<%s\n' "$flyctl" "$app" \
    "$(printf ' %s=<redacted>' "${staged_names[@]}")" >&3
  if [ "$dry_run" = false ]; then
    output=$(printf '%s' "$staged" | "$flyctl" secrets import --stage --app "$app" 2>&1) ||
      die "cannot set the secrets (${staged_names[*]}) of $app: $(printf '%s' "$output" | redact)"
  fi
fi

# 6. Deploy: the image is built by Fly's remote builder (no Docker needed here); the
# release command migrates before any machine is updated.
printf '+ %s deploy --app %s --config fly.toml --remote-only --primary-region %s\n' \
  "$flyctl" "$app" "$region"
if [ "$dry_run" = false ]; then
  "$flyctl" deploy --app "$app" --config fly.toml --remote-only --primary-region "$region" >&2 ||
    die "flyctl deploy failed (its output is above); a release that failed its release command changed nothing.
Logs: $flyctl logs --app $app"
fi

# 7. Wait for the public /readyz.
if [ "$dry_run" = true ]; then
  echo "Would wait for $public_url/readyz to answer 200."
  exit 0
fi
echo "Waiting for $public_url/readyz (at most ${ready_timeout} s)..."
deadline=$((SECONDS + ready_timeout))
last=""
while :; do
  code=$(curl --silent --show-error --output /dev/null --write-out '%{http_code}' \
    --max-time 10 "$public_url/readyz" 2>&1) || true
  if [ "$code" = 200 ]; then
    break
  fi
  last=$code
  if [ "$SECONDS" -ge "$deadline" ]; then
    die "$public_url/readyz did not answer 200 within ${ready_timeout} s (last answer: ${last:-none}).
See what the machines say: $flyctl logs --app $app, and $flyctl status --app $app"
  fi
  sleep 2
done

echo
echo "Courier is up: $public_url"
echo "The admin token is the app's secret COURIER_ADMIN_TOKEN; read it with"
echo "  $flyctl ssh console --app $app -C 'printenv COURIER_ADMIN_TOKEN'"
echo "The admin API is on the private port 9091: $flyctl proxy 9091 --app $app, or"
echo "  $flyctl ssh console --app $app -C 'courier-server admin --help'"
echo "Registration is by token (fly.toml's COURIER_REGISTRATION); issue the first one with"
echo "  $flyctl ssh console --app $app -C 'courier-server admin tokens issue --uses 1'"
