#!/usr/bin/env bash
# Prove the offline linux-aarch64 bundle installs and the agent runs on an aarch64 Python,
# on an x86 machine: Debian's qemu-user-static runs a Debian arm64 python3.11 from a sysroot
# unpacked from apt-downloaded packages (no binfmt_misc, no root needed except to install qemu).
#
#   scripts/test-aarch64.sh [--seconds N] [--work DIR] [--keep] [--bundle TGZ]
#                           [--remote-url URL] [--report FILE]
#   scripts/test-aarch64.sh --sysroot-only       prepare (or reuse) the sysroot, print its path
#
# Steps:
#   1. qemu-aarch64-static: installed with apt-get when missing (as root; otherwise says how).
#   2. The arm64 sysroot, cached in .cache/aarch64/sysroot ($AARCH64_CACHE): apt-get with its own
#      lists/cache dirs and sources (Debian bookworm arm64, python3.11) downloads the packages,
#      `dpkg -x` unpacks them; rebuilt only when the package list changes.
#   3. The bundle: scripts/build.sh --only aarch64 --python-versions 3.11 (or --bundle TGZ).
#   4. The bundle's own install.sh --root WORK/staging --no-systemctl --python <qemu wrapper>, in a
#      network namespace with no network (unshare -n), so pip can only use the bundle's wheels.
#   5. The installed metrics-collector runs under qemu for --seconds (default 20) with host
#      collectors, uploading to a real VictoriaMetrics on 127.0.0.1 (started here, or
#      --remote-url http://127.0.0.1:PORT/api/v1/import), then gets SIGTERM.
#   6. Prints: platform.machine() of the venv's interpreter, samples stored / in VM, the exit
#      code, and the peak RSS of the qemu-user process running the agent (qemu's own memory
#      and its JIT cache included: see docs/aarch64.md). --report FILE writes the same as JSON.
#
# Exit status: 0 proven; 1 a check failed; 2 bad usage; 3 a prerequisite is unavailable (qemu,
# apt, the Debian mirror, the package index, victoria-metrics): the message says which.
# Environment: PYTHON (host interpreter with pip for build.sh, default python3), AARCH64_CACHE,
# AARCH64_DEBIAN_MIRROR, AARCH64_DEBIAN_SECURITY_MIRROR, AARCH64_DEBIAN_KEYRING.
set -euo pipefail

say() { printf 'test-aarch64: %s\n' "$*"; }
die() { printf 'test-aarch64: FAILED: %s\n' "$*" >&2; exit 1; }
unavailable() { printf 'test-aarch64: UNAVAILABLE: %s\n' "$*" >&2; exit 3; }
usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'; }

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HOST_PYTHON="${PYTHON:-python3}"
CACHE="${AARCH64_CACHE:-$REPO/.cache/aarch64}"
SUITE="bookworm"              # the Debian release whose arm64 python3.11 we run
PY="python3.11"
MIRROR="${AARCH64_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SECURITY_MIRROR="${AARCH64_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
KEYRING="${AARCH64_DEBIAN_KEYRING:-/usr/share/keyrings/debian-archive-keyring.gpg}"
# What python3.11 needs at run time for the modules below (found by trial: the stdlib's
# readline/curses/dbm/nis libraries are not needed by anything the agent imports).
PACKAGES=(libc6 libgcc-s1 libcrypt1 python3.11 python3.11-minimal libpython3.11-minimal
          libpython3.11-stdlib libexpat1 zlib1g libffi8 libssl3 libsqlite3-0 libbz2-1.0
          liblzma5 libuuid1)
IMPORT_CHECK="import sqlite3, ssl, ctypes, json, zlib, lzma, bz2, hashlib, uuid, decimal, gzip, http.client, socket, select, signal, threading, venv"
DEVICE_ID="aarch64-qemu"

RUN_SECONDS=20
WORK=""
KEEP=0
BUNDLE=""
REMOTE_URL=""
REPORT=""
SYSROOT_ONLY=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --seconds) [[ $# -ge 2 ]] || { usage >&2; exit 2; }; RUN_SECONDS="$2"; shift 2 ;;
        --work) [[ $# -ge 2 ]] || { usage >&2; exit 2; }; WORK="$2"; shift 2 ;;
        --keep) KEEP=1; shift ;;
        --bundle) [[ $# -ge 2 ]] || { usage >&2; exit 2; }; BUNDLE="$2"; shift 2 ;;
        --remote-url) [[ $# -ge 2 ]] || { usage >&2; exit 2; }; REMOTE_URL="$2"; shift 2 ;;
        --report) [[ $# -ge 2 ]] || { usage >&2; exit 2; }; REPORT="$2"; shift 2 ;;
        --sysroot-only) SYSROOT_ONLY=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; printf 'test-aarch64: unknown option: %s\n' "$1" >&2; exit 2 ;;
    esac
done
[[ "$RUN_SECONDS" =~ ^[0-9]+$ && "$RUN_SECONDS" -ge 3 && "$RUN_SECONDS" -le 600 ]] \
    || { printf 'test-aarch64: --seconds takes 3..600, not %s\n' "$RUN_SECONDS" >&2; exit 2; }
case "$REMOTE_URL" in
    ""|http://127.0.0.1:*/api/v1/import) ;;
    *) printf 'test-aarch64: --remote-url must be http://127.0.0.1:PORT/api/v1/import\n' >&2; exit 2 ;;
esac

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# ---------------------------------------------------------------- 1. qemu-user

ensure_qemu() {
    if command -v qemu-aarch64-static >/dev/null 2>&1; then
        QEMU="$(command -v qemu-aarch64-static)"
        return
    fi
    if [[ $EUID -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
        unavailable "qemu-aarch64-static is not installed: sudo apt-get install qemu-user-static"
    fi
    say "installing qemu-user-static (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -qq --no-install-recommends qemu-user-static >/dev/null 2>&1; then
        apt-get update -qq >/dev/null 2>&1 || true
        apt-get install -y -qq --no-install-recommends qemu-user-static >/dev/null \
            || unavailable "apt-get install qemu-user-static failed"
    fi
    QEMU="$(command -v qemu-aarch64-static)" || unavailable "qemu-user-static installed no qemu-aarch64-static"
}

# ---------------------------------------------------------------- 2. the arm64 sysroot

SYSROOT="$CACHE/sysroot"

sysroot_stamp() { printf '%s\n' "suite=$SUITE" "mirror=$MIRROR" "security=$SECURITY_MIRROR" "${PACKAGES[@]}"; }

sysroot_python() { "$QEMU" -L "$1" "$1/usr/bin/$PY" "${@:2}"; }

build_sysroot() {  # build_sysroot: download + unpack into $CACHE/sysroot.new, check, rename
    command -v apt-get >/dev/null 2>&1 || unavailable "apt-get is needed to download the arm64 packages"
    command -v dpkg >/dev/null 2>&1 || unavailable "dpkg is needed to unpack the arm64 packages"
    [[ -r "$KEYRING" ]] || unavailable "no Debian archive keyring at $KEYRING (apt-get install debian-archive-keyring)"
    local apt="$CACHE/apt" new="$CACHE/sysroot.new" debs="$CACHE/debs"
    rm -rf "$new" "$debs" "$apt/etc"
    mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/etc/sources.list.d" \
        "$apt/etc/preferences.d" "$debs" "$new"
    local opts="arch=arm64 signed-by=$KEYRING"
    printf '%s\n' "deb [$opts] $MIRROR $SUITE main" "deb [$opts] $MIRROR $SUITE-updates main" \
        "deb [$opts] $SECURITY_MIRROR $SUITE-security main" >"$apt/etc/sources.list"
    # Own lists, cache, sources and an empty dpkg status: nothing of this machine's apt state
    # is read or changed. Sandbox::User=root: the _apt user may not be able to write here.
    local apt_opts=(-q -oAPT::Architecture=arm64 -oAPT::Architectures=arm64
        "-oDir::State::Lists=$apt/lists" "-oDir::Cache=$apt/cache" "-oDir::State::Status=/dev/null"
        "-oDir::Etc::SourceList=$apt/etc/sources.list" "-oDir::Etc::SourceParts=$apt/etc/sources.list.d"
        "-oDir::Etc::Preferences=/dev/null" "-oDir::Etc::PreferencesParts=$apt/etc/preferences.d"
        -oDebug::NoLocking=1 -oAPT::Sandbox::User=root)
    say "downloading arm64 packages from $MIRROR ($SUITE): ${PACKAGES[*]}"
    if ! apt-get "${apt_opts[@]}" update >"$CACHE/apt-update.log" 2>&1 \
            || grep -qE '^(E:|Err:)' "$CACHE/apt-update.log"; then
        cat "$CACHE/apt-update.log" >&2
        unavailable "apt-get update for arm64 failed (network or mirror $MIRROR): output above"
    fi
    if ! (cd "$debs" && apt-get "${apt_opts[@]}" download "${PACKAGES[@]}") >"$CACHE/apt-download.log" 2>&1; then
        cat "$CACHE/apt-download.log" >&2
        if grep -q 'Unable to locate package' "$CACHE/apt-download.log"; then
            die "a package of the list is not in $SUITE arm64 (output above)"
        fi
        unavailable "apt-get download failed (network or mirror): output above"
    fi
    local deb
    for deb in "$debs"/*.deb; do dpkg -x "$deb" "$new"; done
    local missing
    if ! missing="$(sysroot_python "$new" -c "$IMPORT_CHECK" 2>&1)"; then
        die "the arm64 $PY in the sysroot cannot import what the agent needs: $missing"
    fi
    sysroot_stamp >"$new/.belabox-sysroot"
    rm -rf "$SYSROOT"
    mv "$new" "$SYSROOT"
    rm -rf "$debs"  # unpacked: the .debs stay in apt's own cache dir only
    say "sysroot ready: $(du -sh "$SYSROOT" | cut -f1) in ${SYSROOT#"$REPO"/}"
}

prepare_sysroot() {
    mkdir -p "$CACHE"
    # Two runs at once (a test and a manual run) must not build the same sysroot together.
    exec 9>"$CACHE/.lock"
    flock -w 300 9 || die "another run holds $CACHE/.lock for more than 300 s"
    if [[ -f "$SYSROOT/.belabox-sysroot" && "$(cat "$SYSROOT/.belabox-sysroot")" == "$(sysroot_stamp)" ]] \
            && sysroot_python "$SYSROOT" -c "$IMPORT_CHECK" >/dev/null 2>&1; then
        say "sysroot cached: ${SYSROOT#"$REPO"/}"
    else
        build_sysroot
    fi
    flock -u 9
}

T0="$(now)"
ensure_qemu
prepare_sysroot
SYSROOT_SECONDS="$(elapsed "$T0")"
if [[ $SYSROOT_ONLY -eq 1 ]]; then
    printf '%s\n' "$SYSROOT"
    exit 0
fi

# ---------------------------------------------------------------- work dir, cleanup

if [[ -z "$WORK" ]]; then
    WORK="$(mktemp -d "${TMPDIR:-/tmp}/belabox-aarch64.XXXXXX")"
    OWN_WORK=1
else
    mkdir -p "$WORK"
    WORK="$(cd "$WORK" && pwd)"
    OWN_WORK=0
fi
AGENT_PID=""
VM_PID=""
cleanup() {
    [[ -n "$AGENT_PID" ]] && kill -KILL "$AGENT_PID" 2>/dev/null || true
    if [[ -n "$VM_PID" ]]; then
        kill -INT "$VM_PID" 2>/dev/null || true
        wait "$VM_PID" 2>/dev/null || true
    fi
    if [[ $OWN_WORK -eq 1 && $KEEP -eq 0 ]]; then rm -rf "$WORK"; fi
}
trap cleanup EXIT

# ---------------------------------------------------------------- 3. the bundle

T0="$(now)"
if [[ -z "$BUNDLE" ]]; then
    say "building the aarch64 bundle for CPython 3.11 (scripts/build.sh)"
    if ! PYTHON="$HOST_PYTHON" "$REPO/scripts/build.sh" --only aarch64 --python-versions 3.11 \
            --out "$WORK/dist" >"$WORK/build.log" 2>&1; then
        cat "$WORK/build.log" >&2
        grep -q 'cannot reach the package index' "$WORK/build.log" \
            && unavailable "build.sh cannot reach the package index (output above)"
        die "scripts/build.sh failed (output above)"
    fi
    BUNDLE="$(ls "$WORK"/dist/belabox-metrics-*-linux-aarch64.tar.gz)"
fi
[[ -f "$BUNDLE" ]] || die "no bundle at $BUNDLE"
BUILD_SECONDS="$(elapsed "$T0")"

# ---------------------------------------------------------------- 4. install, without network

# The interpreter install.sh gets: the sysroot's arm64 python3.11 under qemu. A venv it creates
# has bin/python -> the sysroot's python3.11, an aarch64 ELF this kernel cannot exec without
# binfmt_misc; so right after `-m venv` the wrapper turns bin/python{,3,3.11} into launchers that
# run it under qemu with argv[0] = the launcher (Python then finds the venv's pyvenv.cfg, and pip
# writes the launcher into console-script shebangs). On a board the kernel does this natively.
WRAPPER="$WORK/bin/$PY-aarch64"
mkdir -p "$WORK/bin"
cat >"$WRAPPER" <<EOF
#!/bin/sh
# $PY of the arm64 sysroot, run by qemu-user (written by scripts/test-aarch64.sh).
set -e
QEMU='$QEMU'
SYSROOT='$SYSROOT'
if [ "\$1" = -m ] && [ "\$2" = venv ]; then
    for venv in "\$@"; do :; done
    "\$QEMU" -L "\$SYSROOT" "\$SYSROOT/usr/bin/$PY" "\$@"
    ln -sfn "\$SYSROOT/usr/bin/$PY" "\$venv/bin/$PY.aarch64"
    for name in python python3 $PY; do
        rm -f "\$venv/bin/\$name"
        printf '%s\n' '#!/bin/sh' \\
            '# aarch64 interpreter of this venv, run by qemu-user (no binfmt_misc on this machine)' \\
            "exec '\$QEMU' -L '\$SYSROOT' -0 \\"\\\$0\\" \\"\\\${0%/*}/$PY.aarch64\\" \\"\\\$@\\"" \\
            >"\$venv/bin/\$name"
        chmod 0755 "\$venv/bin/\$name"
    done
    exit 0
fi
exec "\$QEMU" -L "\$SYSROOT" "\$SYSROOT/usr/bin/$PY" "\$@"
EOF
chmod 0755 "$WRAPPER"

T0="$(now)"
rm -rf "$WORK/unpacked" "$WORK/staging"
mkdir -p "$WORK/unpacked"
tar xzf "$BUNDLE" -C "$WORK/unpacked"
BUNDLE_DIR="$(find "$WORK/unpacked" -mindepth 1 -maxdepth 1 -type d | head -n 1)"
# No network during the install: a network namespace of its own has only a loopback that is
# down. install.sh clears PIP_* itself, so dead proxies are the fallback where unshare is denied.
if unshare -n true 2>/dev/null; then
    NO_NETWORK=(unshare -n)
    NETWORK_NOTE="none: own network namespace (unshare -n)"
elif unshare -rn true 2>/dev/null; then
    NO_NETWORK=(unshare -rn)
    NETWORK_NOTE="none: own user+network namespace (unshare -rn)"
else
    NO_NETWORK=(env http_proxy=http://127.0.0.1:9 https_proxy=http://127.0.0.1:9
                HTTP_PROXY=http://127.0.0.1:9 HTTPS_PROXY=http://127.0.0.1:9)
    NETWORK_NOTE="proxies pointed at a closed port (no namespace allowed here)"
fi
say "installing $(basename "$BUNDLE_DIR") with its install.sh (network: $NETWORK_NOTE)"
if ! "${NO_NETWORK[@]}" env PIP_NO_INDEX=1 PIP_INDEX_URL=http://127.0.0.1:9/simple \
        bash "$BUNDLE_DIR/install.sh" --root "$WORK/staging" --no-systemctl --python "$WRAPPER" \
        >"$WORK/install.log" 2>&1; then
    cat "$WORK/install.log" >&2
    die "install.sh failed (output above)"
fi
INSTALL_SECONDS="$(elapsed "$T0")"
VENV="$WORK/staging/opt/belabox-metrics/current"
[[ -x "$VENV/bin/metrics-collector" ]] || die "no $VENV/bin/metrics-collector after install"

# Nothing of the caller's environment may put the source tree on the arm64 interpreter's path.
unset PYTHONPATH PYTHONHOME PYTHONSTARTUP VIRTUAL_ENV QEMU_LD_PREFIX QEMU_ARGV0 2>/dev/null || true

PROBE="$(cd "$WORK" && "$VENV/bin/python" -c '
import json, platform, sys, sysconfig, yaml, belabox_metrics
print(json.dumps({"machine": platform.machine(), "python": platform.python_version(),
    "platform": sysconfig.get_platform(), "prefix": sys.prefix, "base_prefix": sys.base_prefix,
    "package": belabox_metrics.__file__, "libyaml": bool(yaml.__with_libyaml__)}))')" \
    || die "the venv's interpreter does not run"

# ---------------------------------------------------------------- 5. the agent under qemu

free_port() { "$HOST_PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

if [[ -z "$REMOTE_URL" ]]; then
    VM_BIN="$(command -v victoria-metrics || true)"
    [[ -n "$VM_BIN" ]] || unavailable "victoria-metrics is not installed (apt-get install victoria-metrics)"
    VM_PORT="$(free_port)"
    "$VM_BIN" "-httpListenAddr=127.0.0.1:$VM_PORT" "-storageDataPath=$WORK/vm-data" \
        -dedup.minScrapeInterval=1ms -retentionPeriod=100y -search.latencyOffset=0s \
        -search.disableCache -loggerLevel=ERROR >"$WORK/vm.log" 2>&1 &
    VM_PID=$!
    for _ in $(seq 300); do
        curl -fs "http://127.0.0.1:$VM_PORT/health" >/dev/null 2>&1 && break
        kill -0 "$VM_PID" 2>/dev/null || { cat "$WORK/vm.log" >&2; die "victoria-metrics exited"; }
        sleep 0.1
    done
    REMOTE_URL="http://127.0.0.1:$VM_PORT/api/v1/import"
fi

mkdir -p "$WORK/agent"
CONFIG="$WORK/agent/config.yaml"
# The health server's default port may be taken by another agent on this machine: a free one.
HEALTH_PORT="$(free_port)"
cat >"$CONFIG" <<EOF
device: {id: $DEVICE_ID}
storage: {path: $WORK/agent/metrics.db}
remote: {url: "$REMOTE_URL", format: vm-jsonl, interval: 2s, timeout: 5s, shutdown_grace: 5s}
health: {listen: "127.0.0.1:$HEALTH_PORT"}
logging: {level: info, format: json}
metrics:
  - {name: cpu, interval: 1s}
  - {name: memory, interval: 1s}
  - {name: network, interval: 1s}
  - {name: disk, interval: 2s}
  - {name: system, interval: 5s}
EOF

peak_kb() { sed -n 's/^VmHWM:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$1/status" 2>/dev/null || true; }

# The same qemu + interpreter doing nothing: what of the agent's figure is the emulator's.
(cd "$WORK" && exec "$VENV/bin/python" -c 'import time; time.sleep(3)') &
IDLE_PID=$!
IDLE_PEAK_KB=0
while kill -0 "$IDLE_PID" 2>/dev/null; do
    kb="$(peak_kb "$IDLE_PID")"; [[ -n "$kb" ]] && IDLE_PEAK_KB="$kb"
    sleep 0.2
done
wait "$IDLE_PID" || die "the idle interpreter failed"

say "running metrics-collector under qemu for ${RUN_SECONDS}s (uploading to $REMOTE_URL)"
T0="$(now)"
# Every exec in the chain (console script -> bin/python launcher -> qemu) keeps the pid: this
# is the qemu process, and SIGTERM to it is delivered to the emulated agent.
(cd "$WORK/agent" && exec "$VENV/bin/metrics-collector" run --config "$CONFIG") >"$WORK/agent/agent.log" 2>&1 &
AGENT_PID=$!
PEAK_KB=0
SMAPS_SNAPSHOT="$WORK/agent/smaps"
deadline=$(( $(date +%s) + RUN_SECONDS ))
while [[ $(date +%s) -lt $deadline ]]; do
    kill -0 "$AGENT_PID" 2>/dev/null || break
    kb="$(peak_kb "$AGENT_PID")"; [[ -n "$kb" ]] && PEAK_KB="$kb"
    # Ask the emulated agent's own health server once, in the last 5 s of the run.
    if [[ ! -s "$WORK/agent/health.json" && $(( deadline - $(date +%s) )) -le 5 ]]; then
        curl -s -m 2 "http://127.0.0.1:$HEALTH_PORT/health" >"$WORK/agent/health.json.new" 2>/dev/null \
            && mv -f "$WORK/agent/health.json.new" "$WORK/agent/health.json"
    fi
    sleep 0.5
done
kill -0 "$AGENT_PID" 2>/dev/null || { cat "$WORK/agent/agent.log" >&2; die "the agent exited before SIGTERM"; }
AGENT_EXE="$(readlink "/proc/$AGENT_PID/exe" || true)"
cp "/proc/$AGENT_PID/smaps" "$SMAPS_SNAPSHOT" 2>/dev/null || : >"$SMAPS_SNAPSHOT"
kill -TERM "$AGENT_PID"
# Bounded: shutdown_grace is 5 s; 60 s covers a slow emulated shutdown.
for _ in $(seq 600); do
    kill -0 "$AGENT_PID" 2>/dev/null || break
    kb="$(peak_kb "$AGENT_PID")"; [[ -n "$kb" ]] && PEAK_KB="$kb"
    sleep 0.1
done
if kill -0 "$AGENT_PID" 2>/dev/null; then
    kill -KILL "$AGENT_PID"
    die "the agent did not exit within 60 s of SIGTERM"
fi
AGENT_EXIT=0
wait "$AGENT_PID" || AGENT_EXIT=$?
AGENT_PID=""
RUN_SECONDS_TOTAL="$(elapsed "$T0")"

# ---------------------------------------------------------------- 6. figures

# The host interpreter reads the agent's database and asks VictoriaMetrics; the smaps snapshot
# splits the qemu process's RSS into the emulator's JIT cache, the emulator itself (its binary,
# heap, threads: host addresses) and the emulated program (guest addresses; guest_base is 0).
RESULT="$("$HOST_PYTHON" - "$WORK/agent/metrics.db" "$REMOTE_URL" "$DEVICE_ID" "$SMAPS_SNAPSHOT" "$AGENT_EXE" <<'PYEOF'
import json, re, sqlite3, sys, time, urllib.parse, urllib.request

db, import_url, device, smaps_path, qemu_exe = sys.argv[1:6]
conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
stored = conn.execute("SELECT count(*) FROM samples").fetchone()[0]
numeric = conn.execute("SELECT count(*) FROM samples WHERE typeof(value) IN ('integer', 'real')").fetchone()[0]
by_collector = dict(conn.execute(
    "SELECT substr(s.name, 1, instr(s.name, '.') - 1), count(*) FROM samples x "
    "JOIN series s ON s.id = x.series_id GROUP BY 1 ORDER BY 1").fetchall())
conn.close()

base = import_url.rsplit("/api/", 1)[0]
query = urllib.parse.urlencode({"match[]": f'{{device_id="{device}"}}', "start": "0"})
in_vm = 0
deadline = time.monotonic() + 20  # VM makes fresh rows searchable with a short delay
while True:
    with urllib.request.urlopen(f"{base}/internal/force_flush", timeout=10):
        pass
    with urllib.request.urlopen(f"{base}/api/v1/export?{query}", timeout=30) as answer:
        in_vm = sum(len(json.loads(line)["values"]) for line in answer.read().decode().splitlines() if line.strip())
    if in_vm >= numeric or time.monotonic() > deadline:
        break
    time.sleep(0.5)

split = {"jit_kb": 0, "emulator_kb": 0, "guest_anon_kb": 0, "guest_file_kb": 0}
current = None
with open(smaps_path) as smaps:
    for line in smaps:
        head = re.match(r"^([0-9a-f]+)-[0-9a-f]+ (\S+) \S+ \S+ \S+\s*(.*)$", line)
        if head:
            start, perms, path = int(head[1], 16), head[2], head[3]
            if path == "" and "x" in perms:
                current = "jit_kb"            # qemu's translated-code buffer
            elif path == qemu_exe or path.startswith("[") or start >= 0x7F0000000000:
                current = "emulator_kb"
            else:  # the emulated program: its heap and stacks, or files it mapped (ELFs, libs)
                current = "guest_file_kb" if path.startswith("/") else "guest_anon_kb"
        elif line.startswith("Rss:") and current:
            split[current] += int(line.split()[1])
split["guest_kb"] = split["guest_anon_kb"] + split["guest_file_kb"]
print(json.dumps({"samples_stored": stored, "samples_numeric": numeric, "samples_in_vm": in_vm,
                  "by_collector": by_collector, "rss_split_at_end": split}))
PYEOF
)" || die "could not read the figures"

[[ $AGENT_EXIT -eq 0 ]] || tail -n 20 "$WORK/agent/agent.log" >&2
# Print the figures, write --report, and judge: exit 1 names every check that failed.
PROBE="$PROBE" RESULT="$RESULT" REPORT="$REPORT" AGENT_EXIT="$AGENT_EXIT" AGENT_EXE="$AGENT_EXE" \
HEALTH="$(cat "$WORK/agent/health.json" 2>/dev/null || true)" PEAK_KB="$PEAK_KB" IDLE_PEAK_KB="$IDLE_PEAK_KB" NETWORK_NOTE="$NETWORK_NOTE" BUNDLE_NAME="$(basename "$BUNDLE")" \
WORK="$WORK" SYSROOT_SECONDS="$SYSROOT_SECONDS" BUILD_SECONDS="$BUILD_SECONDS" \
INSTALL_SECONDS="$INSTALL_SECONDS" RUN_SECONDS_TOTAL="$RUN_SECONDS_TOTAL" \
"$HOST_PYTHON" - <<'PYEOF' || die "see the checks above"
import json, os, sys

env = os.environ
doc = {**json.loads(env["PROBE"]), **json.loads(env["RESULT"]),
       "agent_exit": int(env["AGENT_EXIT"]), "agent_process_exe": env["AGENT_EXE"],
       "peak_rss_kb": int(env["PEAK_KB"]), "idle_interpreter_peak_rss_kb": int(env["IDLE_PEAK_KB"]),
       "install_network": env["NETWORK_NOTE"], "bundle": env["BUNDLE_NAME"], "work": env["WORK"],
       "seconds": {k: float(env[v]) for k, v in (("sysroot", "SYSROOT_SECONDS"), ("build", "BUILD_SECONDS"),
                                                 ("install", "INSTALL_SECONDS"), ("run", "RUN_SECONDS_TOTAL"))}}
try:
    doc["health_status"] = json.loads(env["HEALTH"])["status"]
except (ValueError, KeyError, TypeError):
    doc["health_status"] = None
if env["REPORT"]:
    with open(env["REPORT"], "w") as out:
        json.dump(doc, out, indent=2)

def mb(kb: int) -> str:
    return f"{kb / 1024:.1f} MB"

split, sec = doc["rss_split_at_end"], doc["seconds"]
print(f"""
aarch64 proof ({doc['bundle']})
  interpreter     platform.machine()={doc['machine']}  Python {doc['python']}  {doc['platform']}  libyaml={doc['libyaml']}
  install network {doc['install_network']}
  samples stored  {doc['samples_stored']}  ({', '.join(f'{k} {v}' for k, v in doc['by_collector'].items())})
  samples in VM   {doc['samples_in_vm']}  (numeric samples stored: {doc['samples_numeric']})
  health server   /health said status={doc['health_status']} (the emulated agent's own HTTP server)
  exit code       {doc['agent_exit']} after SIGTERM
  peak RSS        {mb(doc['peak_rss_kb'])}: RSS of the qemu-user process running the agent (VmHWM)
                  {mb(doc['idle_interpreter_peak_rss_kb'])}: the same qemu + interpreter, sleeping (no agent)
                  before SIGTERM: {mb(split['guest_kb'])} emulated program ({mb(split['guest_anon_kb'])} anonymous + {mb(split['guest_file_kb'])} file-backed),
                  {mb(split['jit_kb'])} qemu JIT cache, {mb(split['emulator_kb'])} qemu itself
  seconds         sysroot {sec['sysroot']}, build {sec['build']}, install {sec['install']}, run {sec['run']}
""")
problems = []
if doc["machine"] != "aarch64":
    problems.append(f"the interpreter is {doc['machine']}, not aarch64")
if not doc["package"].startswith(doc["prefix"] + "/"):
    problems.append(f"belabox_metrics was imported from {doc['package']}, not from the venv")
if "qemu-aarch64" not in doc["agent_process_exe"]:
    problems.append(f"the agent's process is {doc['agent_process_exe']}, not qemu-aarch64")
for collector in ("cpu", "memory", "network"):
    if not doc["by_collector"].get(collector):
        problems.append(f"no {collector} samples stored")
if doc["samples_in_vm"] < doc["samples_numeric"] or not doc["samples_numeric"]:
    problems.append(f"VictoriaMetrics holds {doc['samples_in_vm']} of {doc['samples_numeric']} stored samples")
if doc["health_status"] is None:
    problems.append("the agent's /health did not answer with a status")
if doc["agent_exit"] != 0:
    problems.append(f"the agent exited with {doc['agent_exit']} after SIGTERM")
for problem in problems:
    print(f"test-aarch64: FAILED: {problem}", file=sys.stderr)
sys.exit(1 if problems else 0)
PYEOF
say "proven: the aarch64 bundle installs offline and the agent runs on an aarch64 interpreter"
