#!/usr/bin/env bash
# Install or upgrade belabox-metrics (the metrics-collector agent) from an offline bundle.
#
#   sudo ./install.sh                          from inside an unpacked bundle
#   sudo scripts/install.sh --bundle DIR       from the repo (DIR: an unpacked bundle or its .tar.gz)
#   sudo /opt/belabox-metrics/bin/install.sh --rollback
#                                              switch back to the previous version (this script
#                                              and uninstall.sh are installed there)
#
# Options:
#   --root DIR           prefix for every installed path (a staging tree or a test dir)
#   --no-systemctl       skip systemctl, useradd and chown (everything that needs root / systemd)
#   --python PATH        interpreter for the venv (default: python3; CPython >= 3.10)
#   --bundle DIR|TGZ     the bundle to install (default: the directory holding this script)
#   --rollback           point "current" back at the previous venv, restore its unit and,
#                        when the database was migrated past what it reads, make the database
#                        readable by it again (nothing recorded is lost), then restart
#   --settle-seconds N   how long the new service must stay active (default 5)
#   --token-file PATH    install the bearer token in PATH as /etc/belabox-metrics/api-token
#                        (0600, owned by metrics; set remote.token_file to use it). Read from a
#                        file so the token never shows in the process list or shell history.
#
# Layout: /opt/belabox-metrics/venvs/<version>-<timestamp>/  one venv per install (the last 2 kept)
#         /opt/belabox-metrics/current -> venvs/...           the running one (switched atomically)
#         /opt/belabox-metrics/previous -> venvs/...          the rollback target
#         /opt/belabox-metrics/bin/install.sh, uninstall.sh   these scripts, for --rollback and removal
#         /etc/belabox-metrics/config.yaml                    installed only if absent (0640 root:metrics)
#         /etc/belabox-metrics/api-token                      with --token-file (0600 metrics:metrics)
#         /var/lib/belabox-metrics/                           the agent's data (0750 metrics:metrics)
#         /etc/systemd/system/metrics-collector.service
# Installing needs no network: pip installs from the bundle's wheels/ with --no-index.
set -euo pipefail

SERVICE="metrics-collector"
PACKAGE="belabox-metrics"
SERVICE_USER="metrics"

say() { printf 'install.sh: %s\n' "$*"; }
warn() { printf 'install.sh: warning: %s\n' "$*" >&2; }
die() { printf 'install.sh: ERROR: %s\n' "$*" >&2; exit 1; }

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'; }

ROOT=""
NO_SYSTEMCTL=0
PYTHON_BIN="python3"
BUNDLE=""
ROLLBACK=0
SETTLE_SECONDS=5
TOKEN_SOURCE=""

while [[ $# -gt 0 ]]; do
    case "$1" in
        --root) [[ $# -ge 2 ]] || die "--root needs a directory"; ROOT="$2"; shift 2 ;;
        --root=*) ROOT="${1#*=}"; shift ;;
        --no-systemctl) NO_SYSTEMCTL=1; shift ;;
        --python) [[ $# -ge 2 ]] || die "--python needs a path"; PYTHON_BIN="$2"; shift 2 ;;
        --python=*) PYTHON_BIN="${1#*=}"; shift ;;
        --bundle) [[ $# -ge 2 ]] || die "--bundle needs a directory"; BUNDLE="$2"; shift 2 ;;
        --bundle=*) BUNDLE="${1#*=}"; shift ;;
        --rollback) ROLLBACK=1; shift ;;
        --settle-seconds) [[ $# -ge 2 ]] || die "--settle-seconds needs a number"; SETTLE_SECONDS="$2"; shift 2 ;;
        --settle-seconds=*) SETTLE_SECONDS="${1#*=}"; shift ;;
        --token-file) [[ $# -ge 2 ]] || die "--token-file needs a path"; TOKEN_SOURCE="$2"; shift 2 ;;
        --token-file=*) TOKEN_SOURCE="${1#*=}"; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown option: $1" ;;
    esac
done
[[ "$SETTLE_SECONDS" =~ ^[0-9]+$ ]] || die "--settle-seconds takes whole seconds, not '$SETTLE_SECONDS'"

if [[ -n "$ROOT" ]]; then
    mkdir -p "$ROOT"
    ROOT="$(cd "$ROOT" && pwd)"
    [[ "$ROOT" == "/" ]] && ROOT=""
fi
if [[ -n "$ROOT" && $NO_SYSTEMCTL -eq 0 ]]; then
    die "--root $ROOT installs files away from this system while systemctl would act on it: add --no-systemctl"
fi
if [[ $NO_SYSTEMCTL -eq 0 && $EUID -ne 0 ]]; then
    die "run as root (sudo $0 ...), or add --no-systemctl --root DIR for an unprivileged staging install"
fi

OPT="$ROOT/opt/belabox-metrics"
SCRIPTS="$OPT/bin"
VENVS="$OPT/venvs"
CURRENT="$OPT/current"
PREVIOUS="$OPT/previous"
ETC_DIR="$ROOT/etc/belabox-metrics"
CONFIG="$ETC_DIR/config.yaml"
DATA_DIR="$ROOT/var/lib/belabox-metrics"
UNIT_DIR="$ROOT/etc/systemd/system"
UNIT="$UNIT_DIR/$SERVICE.service"

# ---------------------------------------------------------------- helpers

switch_link() {  # switch_link TARGET LINK: replace LINK atomically (rename(2) over the old link)
    local target="$1" link="$2" tmp
    tmp="$(dirname "$link")/.$(basename "$link").tmp.$$"
    ln -sfn "$target" "$tmp"
    # GNU mv -T renames onto the link itself instead of into the directory it points to;
    # BSD mv (macOS dev boxes) spells it -h.
    mv -T "$tmp" "$link" 2>/dev/null || mv -fh "$tmp" "$link"
}

link_target() { readlink "$1" 2>/dev/null || true; }

install_unit_from() {  # install_unit_from FILE: write the unit atomically
    mkdir -p "$UNIT_DIR"
    install -m 0644 "$1" "$UNIT.tmp.$$"
    mv -f "$UNIT.tmp.$$" "$UNIT"
}

systemctl_quiet() { systemctl "$@" >/dev/null 2>&1; }

# service_settles: the service is active now and stays active (no restart) for SETTLE_SECONDS.
# Type=simple reports "active" as soon as the process is forked, so a crash a second later only
# shows up as "activating" (auto-restart) or "failed": watch it for a while.
service_settles() {
    local waited=0 state
    while true; do
        state="$(systemctl is-active "$SERVICE" 2>/dev/null || true)"
        if [[ "$state" != "active" ]]; then
            say "$SERVICE is '$state' after ${waited}s"
            return 1
        fi
        [[ $waited -ge $SETTLE_SECONDS ]] && break
        sleep 1
        waited=$((waited + 1))
    done
    local restarts
    restarts="$(systemctl show -p NRestarts --value "$SERVICE" 2>/dev/null || echo 0)"
    if [[ -n "$restarts" && "$restarts" != "0" ]]; then
        say "$SERVICE restarted $restarts time(s) within ${SETTLE_SECONDS}s"
        return 1
    fi
    return 0
}

show_journal() {
    if command -v journalctl >/dev/null 2>&1; then
        say "last journal lines of $SERVICE:"
        journalctl -u "$SERVICE" -n 25 --no-pager 2>/dev/null | sed 's/^/    /' || true
    fi
}

start_and_check() {  # start_and_check: daemon-reload, enable, restart, wait; returns 1 when it fails
    systemctl daemon-reload
    systemctl enable "$SERVICE" >/dev/null 2>&1 || die "systemctl enable $SERVICE failed"
    if ! systemctl restart "$SERVICE"; then
        say "systemctl restart $SERVICE failed (a bad config makes run exit 2: journalctl -u $SERVICE names the key)"
        return 1
    fi
    service_settles
}

# schema_of VENV: "<newest database schema that venv's agent knows> <1 if it reads schema_compat>",
# empty when the venv cannot say.
schema_of() {
    "$1/bin/python" -I -c 'import belabox_metrics.store.migrations as m
from belabox_metrics.store.schema import LATEST_VERSION
print(LATEST_VERSION, int(hasattr(m, "COMPAT_TABLE")))' 2>/dev/null || true
}

as_service_user() {  # the agent's files must stay the service user's (lock, database, copies)
    if [[ $NO_SYSTEMCTL -eq 1 ]]; then
        "$@"
    elif command -v runuser >/dev/null 2>&1; then
        runuser -u "$SERVICE_USER" -- "$@"
    else
        setpriv --reuid="$SERVICE_USER" --regid="$SERVICE_USER" --init-groups -- "$@"
    fi
}

# database_for FROM TO (venvs/... names): before switching from FROM to TO with the service
# stopped, make the database readable by TO. Going to a version that knows the database's
# schema needs nothing (a newer version migrates by itself at start). Going back past a
# migration, FROM (the newer) runs `downgrade-db`: the schema TO knows, rebuilt from every
# table when the newer schema only added things, else the copy kept before the migration
# plus what was recorded since. Returns 1 (having changed nothing) when that cannot be done.
database_for() {
    local from="$OPT/$1" to="$OPT/$2" from_schema to_schema to_compat
    read -r from_schema _ <<<"$(schema_of "$from")" || true
    read -r to_schema to_compat <<<"$(schema_of "$to")" || true
    if [[ -z "${to_schema:-}" || -z "${from_schema:-}" ]]; then
        warn "cannot tell which database schema $1 or $2 knows: the database is left as it is"
        return 0
    fi
    if [[ "$from_schema" -le "$to_schema" ]]; then
        return 0
    fi
    [[ -e "$CONFIG" ]] || return 0
    if ! "$from/bin/metrics-collector" downgrade-db --help >/dev/null 2>&1; then
        say "$1 (database schema $from_schema) has no downgrade-db: $2 knows schema $to_schema and will refuse a database migrated past it"
        return 1
    fi
    local args=(downgrade-db --config "$CONFIG" --schema "$to_schema")
    [[ "$to_compat" == "1" ]] && args+=(--reads-compat)
    say "database: making it readable by $2 (schema $to_schema) with $1's metrics-collector ${args[*]}"
    if ! as_service_user "$from/bin/metrics-collector" "${args[@]}"; then
        return 1
    fi
}

# ---------------------------------------------------------------- rollback

if [[ $ROLLBACK -eq 1 ]]; then
    to="$(link_target "$PREVIOUS")"
    from="$(link_target "$CURRENT")"
    [[ -n "$to" && -d "$OPT/$to" ]] || die "no previous version to roll back to ($PREVIOUS is missing)"
    say "rolling back: current $from -> $to"
    [[ $NO_SYSTEMCTL -eq 1 ]] || systemctl stop "$SERVICE" 2>/dev/null || true
    if [[ -n "$from" ]] && ! database_for "$from" "$to"; then
        [[ $NO_SYSTEMCTL -eq 1 ]] || systemctl start "$SERVICE" 2>/dev/null || true
        die "not rolled back (current is still $from): the database could not be made readable by $to (above)"
    fi
    switch_link "$to" "$CURRENT"
    [[ -n "$from" ]] && switch_link "$from" "$PREVIOUS"
    if [[ -f "$OPT/$to/share/belabox-metrics/$SERVICE.service" ]]; then
        install_unit_from "$OPT/$to/share/belabox-metrics/$SERVICE.service"
    fi
    if [[ $NO_SYSTEMCTL -eq 0 ]]; then
        if ! start_and_check; then
            show_journal
            die "the rolled-back version ($to) does not stay up either: see the journal above"
        fi
        say "$SERVICE is active on $to"
    fi
    say "rolled back: current -> $to, previous -> ${from:-none}"
    exit 0
fi

# ---------------------------------------------------------------- the bundle

CLEANUP=()
NEW_VENV=""
SWITCHED=0
cleanup() {
    local path
    for path in ${CLEANUP[@]+"${CLEANUP[@]}"}; do rm -rf "$path"; done
    # A venv that never became "current" is half-built or unused: do not leave it behind.
    if [[ -n "$NEW_VENV" && $SWITCHED -eq 0 ]]; then rm -rf "$NEW_VENV"; fi
}
trap cleanup EXIT

if [[ -z "$BUNDLE" ]]; then
    BUNDLE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
    if [[ ! -f "$BUNDLE/VERSION" || ! -d "$BUNDLE/wheels" ]]; then
        die "$BUNDLE is not an unpacked bundle (no VERSION / wheels/): build one with scripts/build.sh and pass --bundle DIR"
    fi
elif [[ -f "$BUNDLE" ]]; then
    # A .tar.gz straight from dist/: unpack it to a temp dir first.
    unpacked="$(mktemp -d "${TMPDIR:-/tmp}/belabox-metrics-bundle.XXXXXX")"
    CLEANUP+=("$unpacked")
    tar xzf "$BUNDLE" -C "$unpacked" || die "cannot unpack $BUNDLE"
    BUNDLE="$(find "$unpacked" -mindepth 2 -maxdepth 2 -name VERSION -exec dirname {} \; | head -n 1)"
    [[ -n "$BUNDLE" ]] || die "no VERSION file inside the archive"
fi
[[ -d "$BUNDLE" ]] || die "bundle directory $BUNDLE does not exist"
BUNDLE="$(cd "$BUNDLE" && pwd)"
for required in VERSION wheels config.yaml "$SERVICE.service"; do
    [[ -e "$BUNDLE/$required" ]] || die "the bundle $BUNDLE lacks $required"
done
VERSION="$(tr -d '[:space:]' <"$BUNDLE/VERSION")"
[[ -n "$VERSION" ]] || die "$BUNDLE/VERSION is empty"

if [[ -f "$BUNDLE/SHA256SUMS" ]]; then
    if command -v sha256sum >/dev/null 2>&1; then
        sums=(sha256sum --check --quiet --strict)
    else
        sums=(shasum -a 256 --check --quiet)
    fi
    if ! (cd "$BUNDLE" && "${sums[@]}" SHA256SUMS); then
        die "checksum mismatch in $BUNDLE (see above): the bundle is damaged or was modified - copy it again"
    fi
    say "checksums OK ($(wc -l <"$BUNDLE/SHA256SUMS" | tr -d ' ') files)"
else
    warn "no SHA256SUMS in the bundle: not verified"
fi

# ---------------------------------------------------------------- the interpreter

PYTHON_PATH="$(command -v "$PYTHON_BIN" || true)"
[[ -n "$PYTHON_PATH" ]] || die "no interpreter '$PYTHON_BIN' (install python3 >= 3.10 or pass --python PATH)"
if ! "$PYTHON_PATH" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)'; then
    die "$PYTHON_PATH is Python $("$PYTHON_PATH" -c 'import platform; print(platform.python_version())'); belabox-metrics needs >= 3.10"
fi
PYTHON_VERSION="$("$PYTHON_PATH" -c 'import platform; print(platform.python_version())')"
case "$(cd "$(dirname "$PYTHON_PATH")" && pwd -P)" in
    /home/*|/root/*|/run/user/*)
        # The unit has ProtectHome=true: an interpreter under a home directory is invisible to it.
        [[ $NO_SYSTEMCTL -eq 1 ]] || warn "$PYTHON_PATH lives under a home directory, which the service cannot see (ProtectHome=true): use a system python3" ;;
esac

# ---------------------------------------------------------------- 1. user

if [[ $NO_SYSTEMCTL -eq 0 ]]; then
    if ! getent group "$SERVICE_USER" >/dev/null; then
        groupadd --system "$SERVICE_USER"
        say "created system group $SERVICE_USER"
    fi
    if ! getent passwd "$SERVICE_USER" >/dev/null; then
        nologin="/usr/sbin/nologin"
        [[ -x "$nologin" ]] || nologin="/sbin/nologin"
        [[ -x "$nologin" ]] || nologin="/bin/false"
        useradd --system --gid "$SERVICE_USER" --no-create-home --home-dir /var/lib/belabox-metrics \
            --shell "$nologin" --comment "belabox-metrics agent" "$SERVICE_USER"
        say "created system user $SERVICE_USER"
    fi
fi

# ---------------------------------------------------------------- 2. a new venv (old service keeps running)

mkdir -p "$VENVS"
venv_name="$VERSION-$(date -u +%Y%m%dT%H%M%SZ)"
if [[ -e "$VENVS/$venv_name" ]]; then  # two installs within one second
    n=2
    while [[ -e "$VENVS/$venv_name-$n" ]]; do n=$((n + 1)); done
    venv_name="$venv_name-$n"
fi
NEW_VENV="$VENVS/$venv_name"  # removed again on exit unless the switch below happens

say "creating $NEW_VENV with $PYTHON_PATH (Python $PYTHON_VERSION)"
pip_wheel="$(ls "$BUNDLE"/wheels/pip-*.whl 2>/dev/null | sort -V | tail -n 1 || true)"
# Keep the operator's pip config, PIP_* variables and user site out of it: the install must be
# the bundle only.
for pip_var in $(compgen -e | grep '^PIP_' || true); do unset "$pip_var"; done
export PIP_CONFIG_FILE=/dev/null PYTHONNOUSERSITE=1 PIP_DISABLE_PIP_VERSION_CHECK=1
if [[ -n "$pip_wheel" ]]; then
    # pip runs straight from its wheel: no need for ensurepip (Debian's python3-venv package).
    "$PYTHON_PATH" -m venv --without-pip "$NEW_VENV" || die "python3 -m venv failed"
    pip_cmd=("$NEW_VENV/bin/python" "$pip_wheel/pip")
else
    "$PYTHON_PATH" -m venv "$NEW_VENV" || die "python3 -m venv failed (on Debian/Ubuntu: apt install python3-venv)"
    pip_cmd=("$NEW_VENV/bin/python" -m pip)
fi
if ! "${pip_cmd[@]}" install --quiet --no-index --no-cache-dir --find-links "$BUNDLE/wheels" \
        "$PACKAGE==$VERSION"; then
    die "pip could not install $PACKAGE $VERSION from $BUNDLE/wheels (no network is used): is this bundle ($(basename "$BUNDLE")) built for $(uname -m) and Python $PYTHON_VERSION?"
fi
[[ -x "$NEW_VENV/bin/metrics-collector" ]] || die "the venv has no bin/metrics-collector"
# Each venv carries its own unit and example config, so a rollback restores a matching unit.
mkdir -p "$NEW_VENV/share/belabox-metrics"
cp "$BUNDLE/$SERVICE.service" "$NEW_VENV/share/belabox-metrics/"
cp "$BUNDLE/config.yaml" "$NEW_VENV/share/belabox-metrics/config.yaml.example"
cp "$BUNDLE/VERSION" "$NEW_VENV/share/belabox-metrics/VERSION"

# ---------------------------------------------------------------- 3. stop the old service

if [[ $NO_SYSTEMCTL -eq 0 ]]; then
    if systemctl_quiet cat "$SERVICE"; then
        say "stopping and disabling the running $SERVICE"
        systemctl stop "$SERVICE" 2>/dev/null || true
        systemctl disable "$SERVICE" >/dev/null 2>&1 || true
    fi
fi

# ---------------------------------------------------------------- 4. switch current, prune

old_target="$(link_target "$CURRENT")"
if [[ -e "$CURRENT" && ! -L "$CURRENT" ]]; then
    die "$CURRENT exists and is not a symlink: move it away first"
fi
# Relative targets: the same tree works under --root and after being copied.
switch_link "venvs/$venv_name" "$CURRENT"
SWITCHED=1
if [[ -n "$old_target" && "$old_target" != "venvs/$venv_name" && -d "$OPT/$old_target" ]]; then
    switch_link "$old_target" "$PREVIOUS"
else
    old_target=""
fi
pruned=()
for venv in "$VENVS"/*; do
    [[ -d "$venv" ]] || continue
    name="venvs/$(basename "$venv")"
    [[ "$name" == "venvs/$venv_name" || "$name" == "$old_target" ]] && continue
    rm -rf "$venv"
    pruned+=("$(basename "$venv")")
done

# ---------------------------------------------------------------- 5. config, data, unit

if [[ ! -d "$ETC_DIR" ]]; then
    mkdir -p "$ETC_DIR"
    chmod 0750 "$ETC_DIR"
fi
[[ $NO_SYSTEMCTL -eq 1 ]] || chown "root:$SERVICE_USER" "$ETC_DIR"
if [[ -e "$CONFIG" ]]; then
    config_action="kept (not overwritten)"
else
    install -m 0640 "$BUNDLE/config.yaml" "$CONFIG.tmp.$$"
    [[ $NO_SYSTEMCTL -eq 1 ]] || chown "root:$SERVICE_USER" "$CONFIG.tmp.$$"
    mv -f "$CONFIG.tmp.$$" "$CONFIG"
    config_action="installed from the bundle (edit it, then: systemctl restart $SERVICE)"
fi
token_action="none (no --token-file)"
if [[ -n "$TOKEN_SOURCE" ]]; then
    [[ -s "$TOKEN_SOURCE" ]] || die "--token-file $TOKEN_SOURCE is missing or empty"
    TOKEN_FILE="$ETC_DIR/api-token"
    # umask first: the token is never readable by others, not even for an instant.
    (umask 077 && tr -d '\r\n' < "$TOKEN_SOURCE" > "$TOKEN_FILE.tmp.$$")
    chmod 0600 "$TOKEN_FILE.tmp.$$"
    [[ $NO_SYSTEMCTL -eq 1 ]] || chown "$SERVICE_USER:$SERVICE_USER" "$TOKEN_FILE.tmp.$$"
    mv -f "$TOKEN_FILE.tmp.$$" "$TOKEN_FILE"
    token_action="installed as $TOKEN_FILE (0600); set remote.token_file to it"
elif [[ -e "$ETC_DIR/api-token" ]]; then
    token_action="kept $ETC_DIR/api-token"
fi
# The new version's example sits next to it, to diff against after an upgrade.
install -m 0640 "$BUNDLE/config.yaml" "$CONFIG.example"
[[ $NO_SYSTEMCTL -eq 1 ]] || chown "root:$SERVICE_USER" "$CONFIG.example"

mkdir -p "$DATA_DIR"
chmod 0750 "$DATA_DIR"
[[ $NO_SYSTEMCTL -eq 1 ]] || chown "$SERVICE_USER:$SERVICE_USER" "$DATA_DIR"

install_unit_from "$BUNDLE/$SERVICE.service"

# The scripts stay on the board: the bundle in /tmp is gone after a reboot, a rollback is not.
mkdir -p "$SCRIPTS"
for script in install.sh uninstall.sh; do
    install -m 0755 "$BUNDLE/$script" "$SCRIPTS/.$script.tmp.$$"
    mv -f "$SCRIPTS/.$script.tmp.$$" "$SCRIPTS/$script"
done

# ---------------------------------------------------------------- 6. start and verify

service_state="not started (--no-systemctl)"
if [[ $NO_SYSTEMCTL -eq 0 ]]; then
    say "starting $SERVICE $VERSION"
    if start_and_check; then
        service_state="active"
    else
        show_journal
        if [[ -n "$old_target" ]]; then
            say "the new version does not stay up: rolling back to $old_target"
            systemctl stop "$SERVICE" 2>/dev/null || true
            if ! database_for "venvs/$venv_name" "$old_target"; then
                die "$PACKAGE $VERSION failed to start, and the database it migrated cannot be made readable by $old_target (above): fix the cause of the failure (journal above), then: systemctl restart $SERVICE"
            fi
            switch_link "$old_target" "$CURRENT"
            switch_link "venvs/$venv_name" "$PREVIOUS"
            if [[ -f "$OPT/$old_target/share/belabox-metrics/$SERVICE.service" ]]; then
                install_unit_from "$OPT/$old_target/share/belabox-metrics/$SERVICE.service"
            fi
            if start_and_check; then
                die "$PACKAGE $VERSION failed to start; rolled back to $old_target, which is active again. The failed venv is kept as 'previous'."
            fi
            show_journal
            die "$PACKAGE $VERSION failed to start, and the rolled-back $old_target does not stay up either (journal above)"
        fi
        die "$PACKAGE $VERSION failed to start and there is no previous version to roll back to: fix the cause above (often $CONFIG), then: systemctl restart $SERVICE"
    fi
fi

# ---------------------------------------------------------------- summary

echo
say "installed $PACKAGE $VERSION"
printf '  %-10s %s\n' \
    "venv" "$NEW_VENV (Python $PYTHON_VERSION)" \
    "current" "$CURRENT -> $(link_target "$CURRENT")" \
    "previous" "${old_target:+$PREVIOUS -> $old_target}${old_target:-none (first install)}" \
    "pruned" "${pruned[*]:-nothing}" \
    "config" "$CONFIG: $config_action" \
    "token" "$token_action" \
    "data" "$DATA_DIR" \
    "unit" "$UNIT" \
    "scripts" "$SCRIPTS/install.sh (--rollback), $SCRIPTS/uninstall.sh" \
    "service" "$service_state"
if [[ $NO_SYSTEMCTL -eq 0 ]]; then
    echo "  logs:      journalctl -u $SERVICE -f"
    echo "  rollback:  sudo $SCRIPTS/install.sh --rollback"
fi
