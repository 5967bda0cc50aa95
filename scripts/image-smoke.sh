#!/usr/bin/env bash
# Proves that the Dockerfile builds and that the image starts and serves, without a Docker
# engine and without pulling anything from a container registry:
#
#   1. a local base image "like node:20-bookworm-slim": a debootstrap --variant=minbase bookworm
#      root plus this machine's node and npm (cached in $CACHE, rebuilt when node changes);
#   2. `buildah bud --isolation chroot` of the real Dockerfile with --build-arg BASE=<that image>
#      (the build's npm ci talks to the npm registry), plus the iptables-init target;
#   3. the built image's config: user 10001, HEALTHCHECK, EXPOSE 3128 9090, VOLUME /data, no
#      devDependencies in /app/node_modules;
#   4. the image's own ENTRYPOINT + CMD, as its USER, with its ENV and WORKDIR, chrooted into the
#      image's root filesystem as PID 1 of fresh PID, mount and network namespaces (so 3128 and
#      9090 are the image's defaults and nothing can leave the namespace);
#   5. the image's HEALTHCHECK command exits 0; /healthz, /readyz and /metrics answer; the proxy
#      answers 407 without credentials, 403 not_allowlisted for a denied name, and resolves an
#      allowed one (502 dns_error: the namespace has no network, which proves nothing left it);
#   6. SIGTERM to PID 1 drains and exits 0;
#   7. the iptables-init image installs its rules in another fresh network namespace.
#
# Usage: sudo scripts/image-smoke.sh [--clean]     (--clean: drop the cache first)
# Needs root, buildah, debootstrap, unshare/nsenter (util-linux), curl, node and npm, and network
# access to a Debian mirror ($DEBIAN_MIRROR) and the npm registry. Takes about 2.5 minutes cold,
# 1.5 with the cached base system. Prints "image-smoke: ok: ..." lines, then "image-smoke: PASS".
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${PORTCULLIS_SMOKE_CACHE:-/var/tmp/portcullis-image-smoke}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
IMAGE="localhost/portcullis:smoke"
INIT_IMAGE="localhost/portcullis-iptables-init:smoke"
LOGS="$CACHE/logs"
BUILDAH=(buildah --root "$CACHE/storage" --runroot "$CACHE/runroot" --storage-driver vfs)

say() { echo "image-smoke: $*"; }
ok() { echo "image-smoke: ok: $*"; }
fail() {
  echo "image-smoke: FAIL: $*" >&2
  exit 1
}

[ "$(id -u)" = 0 ] || fail "must run as root (buildah vfs storage, chroot, namespaces)"
for tool in buildah debootstrap unshare nsenter chroot curl node npm; do
  command -v "$tool" >/dev/null || fail "$tool is not installed (apt-get install buildah debootstrap util-linux curl)"
done
if [ "${1:-}" = --clean ]; then
  say "removing $CACHE"
  "${BUILDAH[@]}" rm --all >/dev/null 2>&1 || true
  rm -rf "$CACHE"
fi
mkdir -p "$CACHE" "$LOGS"

CONTAINERS=()
SERVE_PID=""
cleanup() {
  if [ -n "$SERVE_PID" ] && kill -0 "$SERVE_PID" 2>/dev/null; then kill -KILL "$SERVE_PID" 2>/dev/null || true; fi
  for c in "${CONTAINERS[@]}"; do
    "${BUILDAH[@]}" umount "$c" >/dev/null 2>&1 || true
    "${BUILDAH[@]}" rm "$c" >/dev/null 2>&1 || true
  done
}
trap cleanup EXIT

# --- 1. base image ---------------------------------------------------------------------------------
NODE_BIN="$(readlink -f "$(command -v node)")"
NODE_VERSION="$(node --version)"
NPM_DIR="$(cd "$(dirname "$(readlink -f "$(command -v npm)")")/.." && pwd)"
# Behind a TLS-inspecting egress proxy, npm inside the build must trust the same extra CAs as
# this machine: the base image carries them (as a CI's own base image would) when the host sets
# NODE_EXTRA_CA_CERTS. The tag changes with node and with that file.
EXTRA_CA="${NODE_EXTRA_CA_CERTS:-}"
ca_tag=none
if [ -n "$EXTRA_CA" ]; then
  [ -r "$EXTRA_CA" ] || fail "NODE_EXTRA_CA_CERTS=$EXTRA_CA is not readable"
  ca_tag="$(sha256sum "$EXTRA_CA" | cut -c1-12)"
fi
BASE_IMAGE="localhost/portcullis-base:bookworm-node-${NODE_VERSION#v}-ca-$ca_tag"

if [ ! -e "$CACHE/rootfs/.complete" ]; then
  say "debootstrap --variant=minbase bookworm from $MIRROR (once; cached in $CACHE/rootfs)"
  rm -rf "$CACHE/rootfs" "$CACHE/rootfs.partial"
  start=$SECONDS
  debootstrap --variant=minbase bookworm "$CACHE/rootfs.partial" "$MIRROR" >"$LOGS/debootstrap.log" 2>&1 ||
    fail "debootstrap failed; see $LOGS/debootstrap.log"
  rm -rf "$CACHE/rootfs.partial/var/cache/apt/archives/"*.deb "$CACHE/rootfs.partial/var/lib/apt/lists/"*
  touch "$CACHE/rootfs.partial/.complete"
  mv "$CACHE/rootfs.partial" "$CACHE/rootfs"
  ok "debootstrap bookworm minbase in $((SECONDS - start)) s"
fi

if ! "${BUILDAH[@]}" inspect --type image "$BASE_IMAGE" >/dev/null 2>&1; then
  say "committing $BASE_IMAGE (rootfs + node $NODE_VERSION from $NODE_BIN, npm from $NPM_DIR)"
  ctr="$("${BUILDAH[@]}" from scratch)"
  CONTAINERS+=("$ctr")
  mnt="$("${BUILDAH[@]}" mount "$ctr")"
  cp -a "$CACHE/rootfs/." "$mnt/"
  rm -f "$mnt/.complete"
  # The layout of the official node images: node and npm under /usr/local.
  install -D -m 0755 "$NODE_BIN" "$mnt/usr/local/bin/node"
  mkdir -p "$mnt/usr/local/lib/node_modules"
  cp -a "$NPM_DIR" "$mnt/usr/local/lib/node_modules/npm"
  ln -sf ../lib/node_modules/npm/bin/npm-cli.js "$mnt/usr/local/bin/npm"
  ln -sf ../lib/node_modules/npm/bin/npx-cli.js "$mnt/usr/local/bin/npx"
  extra_env=()
  if [ -n "$EXTRA_CA" ]; then
    install -D -m 0644 "$EXTRA_CA" "$mnt/usr/local/share/portcullis-smoke/extra-ca.pem"
    extra_env=(--env NODE_EXTRA_CA_CERTS=/usr/local/share/portcullis-smoke/extra-ca.pem)
  fi
  "${BUILDAH[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env NODE_VERSION="${NODE_VERSION#v}" "${extra_env[@]}" --cmd node "$ctr"
  "${BUILDAH[@]}" commit --quiet --format docker "$ctr" "$BASE_IMAGE" >/dev/null
  ok "base image $BASE_IMAGE committed${EXTRA_CA:+ (trusting the extra CAs of $EXTRA_CA)}"
fi

# --- 2. build the real Dockerfile ----------------------------------------------------------------
say "buildah bud --isolation chroot --build-arg BASE=$BASE_IMAGE (log: $LOGS/build.log)"
start=$SECONDS
"${BUILDAH[@]}" bud --isolation chroot --format docker --pull=never \
  --build-arg BASE="$BASE_IMAGE" -t "$IMAGE" -f "$ROOT/Dockerfile" "$ROOT" >"$LOGS/build.log" 2>&1 ||
  fail "image build failed; last lines of $LOGS/build.log:
$(tail -n 30 "$LOGS/build.log")"
ok "Dockerfile built $IMAGE in $((SECONDS - start)) s"
start=$SECONDS
"${BUILDAH[@]}" bud --isolation chroot --format docker --pull=never --target iptables-init \
  --build-arg BASE="$BASE_IMAGE" -t "$INIT_IMAGE" -f "$ROOT/Dockerfile" "$ROOT" >"$LOGS/build-init.log" 2>&1 ||
  fail "iptables-init build failed; last lines of $LOGS/build-init.log:
$(tail -n 30 "$LOGS/build-init.log")"
ok "Dockerfile --target iptables-init built $INIT_IMAGE in $((SECONDS - start)) s"

# --- 3. the image's configuration ----------------------------------------------------------------
CONFIG_JSON="$("${BUILDAH[@]}" inspect --type image "$IMAGE")"
# One shell-quoted assignment per field, computed by node from the image config.
# shellcheck disable=SC2016 # the node program is single-quoted on purpose
eval "$(CONFIG_JSON="$CONFIG_JSON" node --input-type=module -e '
  const c = JSON.parse(process.env.CONFIG_JSON).Docker.config;
  const Q = String.fromCharCode(39);
  const q = (s) => Q + String(s).split(Q).join(Q + "\\" + Q + Q) + Q;
  const arr = (name, a) => `${name}=(${(a ?? []).map(q).join(" ")})`;
  console.log(`IMG_USER=${q(c.User ?? "")}`);
  console.log(`IMG_WORKDIR=${q(c.WorkingDir || "/")}`);
  console.log(arr("IMG_ENV", c.Env));
  console.log(arr("IMG_ENTRYPOINT", c.Entrypoint));
  console.log(arr("IMG_CMD", c.Cmd));
  console.log(arr("IMG_HEALTHCHECK", c.Healthcheck?.Test));
  console.log(`IMG_PORTS=${q(Object.keys(c.ExposedPorts ?? {}).sort().join(" "))}`);
  console.log(`IMG_VOLUMES=${q(Object.keys(c.Volumes ?? {}).join(" "))}`);
')"
[ "$IMG_USER" = "10001:10001" ] || fail "image USER is '$IMG_USER', expected 10001:10001"
[ "${IMG_HEALTHCHECK[0]:-}" = CMD ] || fail "image has no exec-form HEALTHCHECK (got '${IMG_HEALTHCHECK[*]:-none}')"
[ "$IMG_PORTS" = "3128/tcp 9090/tcp" ] || fail "image exposes '$IMG_PORTS', expected 3128/tcp 9090/tcp"
[ "$IMG_VOLUMES" = "/data" ] || fail "image volumes are '$IMG_VOLUMES', expected /data"
size="$("${BUILDAH[@]}" images --format '{{.Size}}' "$IMAGE" 2>/dev/null || echo '?')"
ok "config: user $IMG_USER, workdir $IMG_WORKDIR, entrypoint ${IMG_ENTRYPOINT[*]}, cmd ${IMG_CMD[*]}, healthcheck ${IMG_HEALTHCHECK[*]:1}, expose $IMG_PORTS, volume $IMG_VOLUMES, size $size"

ctr="$("${BUILDAH[@]}" from --pull-never "$IMAGE")"
CONTAINERS+=("$ctr")
MNT="$("${BUILDAH[@]}" mount "$ctr")"
for dev in typescript vitest tsx @types/node fast-check ajv; do
  [ ! -e "$MNT/app/node_modules/$dev" ] || fail "devDependency $dev is in the runtime image"
done
for f in /app/dist/cli.js /app/policies/default.yaml /app/docker/healthcheck.mjs /app/docker/metrics-bridge.mjs /app/node_modules/pino; do
  [ -e "$MNT$f" ] || fail "$f is missing from the image"
done
[ "$(stat -c %u:%a "$MNT/data")" = "10001:700" ] || fail "/data is $(stat -c %u:%a "$MNT/data"), expected owner 10001 mode 700"
[ "$(stat -c %u "$MNT/app/dist/cli.js")" = 0 ] || fail "/app/dist is not owned by root"
ok "runtime image: no devDependencies, dist/policies/docker files present, /data owned by 10001 (0700), code owned by root"

# --- 4. run the image's entry command ---------------------------------------------------------
uid="${IMG_USER%%:*}"
gid="${IMG_USER##*:}"
SERVE_LOG="$LOGS/serve.log"
# Inside: PID 1 of new PID/mount/network namespaces; proc and dev for the chroot; then exec the
# image's ENTRYPOINT + CMD as its USER, with only its ENV, from its WORKDIR, so node is PID 1.
# shellcheck disable=SC2016 # expanded by the inner shells, not this one
unshare --pid --mount --net --fork --kill-child -- bash -c '
  set -e
  mnt=$1 userspec=$2 workdir=$3
  shift 3
  ip link set lo up
  mount -t proc proc "$mnt/proc"
  mount --rbind /dev "$mnt/dev"
  exec chroot --userspec="$userspec" "$mnt" /usr/bin/env -i HOME=/nonexistent "$@"
' image-run "$MNT" "$uid:$gid" "$IMG_WORKDIR" \
  "${IMG_ENV[@]}" /bin/sh -c 'cd "$0" && exec "$@"' "$IMG_WORKDIR" "${IMG_ENTRYPOINT[@]}" "${IMG_CMD[@]}" \
  >"$SERVE_LOG" 2>&1 &
UNSHARE_PID=$!
for _ in $(seq 50); do
  SERVE_PID="$(awk '{print $1}' "/proc/$UNSHARE_PID/task/$UNSHARE_PID/children" 2>/dev/null || true)"
  [ -n "$SERVE_PID" ] && break
  sleep 0.1
done
[ -n "$SERVE_PID" ] || fail "the container process did not start; $(cat "$SERVE_LOG")"

in_ns() { nsenter --target "$SERVE_PID" --net --mount -- "$@"; }
in_image() { in_ns chroot --userspec="$uid:$gid" "$MNT" /usr/bin/env -i HOME=/nonexistent "${IMG_ENV[@]}" "$@"; }

# The image's HEALTHCHECK command, run the way the engine would (inside the container).
healthy=""
start=$SECONDS
for _ in $(seq 60); do
  if in_image "${IMG_HEALTHCHECK[@]:1}" >/dev/null 2>&1; then
    healthy=yes
    break
  fi
  kill -0 "$UNSHARE_PID" 2>/dev/null || fail "the container exited before it was healthy:
$(cat "$SERVE_LOG")"
  sleep 0.5
done
[ -n "$healthy" ] || fail "HEALTHCHECK never passed; log:
$(cat "$SERVE_LOG")"
ok "HEALTHCHECK (${IMG_HEALTHCHECK[*]:1}) exits 0 after $((SECONDS - start)) s"

# The container's /proc (mounted at $MNT/proc inside its mount namespace) shows its own PIDs.
comm="$(in_ns cat "$MNT/proc/1/comm")"
[ "$comm" = node ] || fail "PID 1 in the container is '$comm', expected node"
ok "PID 1 in the container is node (no init)"

body="$(in_ns curl -sS --noproxy '*' --max-time 5 http://127.0.0.1:9090/healthz)"
[ "$body" = '{"status":"ok"}' ] || fail "/healthz answered '$body'"
ok "GET http://127.0.0.1:9090/healthz → $body"
ready="$(in_ns curl -sS --noproxy '*' --max-time 5 -w ' %{http_code}' http://127.0.0.1:9090/readyz)"
[ "${ready##* }" = 200 ] || fail "/readyz answered '$ready'"
ok "GET /readyz → $ready"
metrics="$(in_ns curl -sS --noproxy '*' --max-time 5 http://127.0.0.1:9090/metrics)"
for m in portcullis_requests_total portcullis_policy_info portcullis_store_up portcullis_process_start_time_seconds; do
  grep -q "^# TYPE $m " <<<"$metrics" || fail "/metrics has no $m"
done
ok "GET /metrics → $(grep -c '^# TYPE ' <<<"$metrics") metric families, portcullis_store_up $(grep '^portcullis_store_up ' <<<"$metrics" | awk '{print $2}')"

# A session through the image's own CLI and the first-start admin token in /data.
created="$(in_image node /app/dist/cli.js sessions create smoke-agent --app image-smoke \
  --admin-url http://127.0.0.1:9090 --token-file /data/admin.token --json)"
token="$(CREATED="$created" node -e 'process.stdout.write(JSON.parse(process.env.CREATED).token)')"
[ -n "$token" ] || fail "sessions create printed no token: $created"
ok "portcullis sessions create (inside the image, admin token from /data/admin.token) → a session"

code="$(in_ns curl -sS --noproxy '' --max-time 5 -o /dev/null -w '%{http_code}' -x http://127.0.0.1:3128 http://example.org/)"
[ "$code" = 407 ] || fail "no credentials: expected 407, got $code"
ok "proxy without credentials → 407"
denied="$(in_ns curl -sS --noproxy '' --max-time 5 -D - -o /dev/null -x "http://smoke-agent:$token@127.0.0.1:3128" http://example.org/)"
grep -q '^HTTP/1.1 403' <<<"$denied" || fail "denied name: expected 403, got: $denied"
grep -qi '^x-portcullis-reason: not_allowlisted' <<<"$denied" || fail "denied name: no X-Portcullis-Reason: not_allowlisted"
ok "GET http://example.org/ through the proxy → 403, X-Portcullis-Reason: not_allowlisted"
allowed="$(in_ns curl -sS --noproxy '' --max-time 15 -D - -o /dev/null -x "http://smoke-agent:$token@127.0.0.1:3128" http://registry.npmjs.org/left-pad || true)"
grep -q '^HTTP/1.1 502' <<<"$allowed" || fail "allowed name in a namespace without network: expected 502, got: $allowed"
grep -qi '^x-portcullis-reason: dns_error' <<<"$allowed" || fail "allowed name: expected reason dns_error, got: $allowed"
ok "GET http://registry.npmjs.org/left-pad → allowed, then 502 dns_error (no network in the namespace)"

# --- 6. SIGTERM drains ----------------------------------------------------------------------
start=$SECONDS
kill -TERM "$SERVE_PID"
status=0
for _ in $(seq 80); do
  kill -0 "$UNSHARE_PID" 2>/dev/null || break
  sleep 0.5
done
if kill -0 "$UNSHARE_PID" 2>/dev/null; then fail "still running 40 s after SIGTERM"; fi
wait "$UNSHARE_PID" || status=$?
SERVE_PID=""
[ "$status" = 0 ] || fail "exit status $status after SIGTERM; log:
$(tail -n 20 "$SERVE_LOG")"
grep -q 'SIGTERM: draining' "$SERVE_LOG" || fail "no 'SIGTERM: draining' line"
grep -q '"msg":"stopped"' "$SERVE_LOG" || fail "no 'stopped' log line"
ok "SIGTERM to PID 1 → drained and exited 0 in $((SECONDS - start)) s"
# pino writes stdout in batches; after the drain everything is out.
egress="$(grep -c '"msg":"egress"' "$SERVE_LOG" || true)"
[ "$egress" -ge 3 ] || fail "expected 3 egress decision lines in $SERVE_LOG, found $egress"
grep '"msg":"egress"' "$SERVE_LOG" | grep -q '"reason":"not_allowlisted"' || fail "no not_allowlisted egress line"
ok "egress decision lines on stdout: $egress (JSON, one per request)"

# --- 7. the iptables-init image --------------------------------------------------------------
ictr="$("${BUILDAH[@]}" from --pull-never "$INIT_IMAGE")"
CONTAINERS+=("$ictr")
IMNT="$("${BUILDAH[@]}" mount "$ictr")"
# shellcheck disable=SC2016 # expanded by the inner shell
rules="$(unshare --mount --net --fork -- bash -c '
  set -e
  mount -t proc proc "$1/proc"
  chroot "$1" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PROXY_UID=10001 AGENT_UID=10002 /usr/local/bin/iptables-init.sh
  chroot "$1" iptables -S OUTPUT
' init-run "$IMNT" 2>&1)" || fail "iptables-init.sh failed in its image: $rules"
grep -q -- '--uid-owner 10001 -j ACCEPT' <<<"$rules" || fail "iptables-init installed no owner rule: $rules"
grep -q -- '-A OUTPUT -j PORTCULLIS-EGRESS' <<<"$rules" || fail "iptables-init did not hook OUTPUT: $rules"
ok "iptables-init image: iptables-init.sh installed its rules in a fresh network namespace"

say PASS
