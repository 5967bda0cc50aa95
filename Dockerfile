# Portcullis container image.
#
#   docker build -t portcullis .                                    # the proxy (last stage)
#   docker build --target iptables-init -t portcullis-iptables-init .  # sidecar init container
#
# BASE must be a Debian bookworm image with node (20 LTS) and npm in PATH: the official
# node:20-bookworm-slim by default; a CI without registry access passes its own with
# --build-arg BASE=... (scripts/image-smoke.sh builds one from debootstrap and the host's node).
#
# Signals: node is PID 1 and needs no init. `portcullis serve` installs SIGTERM/SIGINT handlers
# that drain (stop accepting, 503 draining on open connections, in-flight requests get
# --drain-timeout-ms, then the rest is closed) and exit 0; the process starts no children, so
# there are no zombies to reap. Give the runtime a stop grace period longer than the drain
# timeout (default 30 s): `docker stop -t 40`, Kubernetes terminationGracePeriodSeconds: 45.
ARG BASE=node:20-bookworm-slim

# --- build: TypeScript → dist/ -----------------------------------------------------------------
FROM ${BASE} AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json ./
COPY src ./src
RUN npm run build

# --- deps: production dependencies only -------------------------------------------------------
FROM ${BASE} AS deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund && npm cache clean --force

# --- iptables-init: the sidecar pattern's init container (docker/k8s/sidecar) -----------------
# Not part of the proxy image; built only with --target iptables-init.
FROM ${BASE} AS iptables-init
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends iptables \
 && rm -rf /var/lib/apt/lists/*
COPY docker/k8s/sidecar/iptables-init.sh /usr/local/bin/iptables-init.sh
RUN chmod 0755 /usr/local/bin/iptables-init.sh
ENTRYPOINT ["/usr/local/bin/iptables-init.sh"]

# --- runtime: the proxy ---------------------------------------------------------------------------
FROM ${BASE} AS runtime
ENV NODE_ENV=production
# A fixed UID/GID: the sidecar's iptables rules and Kubernetes runAsUser refer to 10001.
RUN groupadd --system --gid 10001 portcullis \
 && useradd --system --uid 10001 --gid portcullis --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin portcullis \
 && mkdir -p /data \
 && chown portcullis:portcullis /data \
 && chmod 0700 /data
WORKDIR /app
# Code and policies stay owned by root: the proxy's user can read but not change them.
COPY package.json ./
COPY --from=deps /app/node_modules ./node_modules
COPY --from=build /src/dist ./dist
COPY policies ./policies
COPY docker/healthcheck.mjs docker/metrics-bridge.mjs ./docker/
# Settings as PORTCULLIS_* variables rather than CMD flags, so `docker run IMAGE serve --policy X`
# keeps them; a flag or -e overrides any of them. State, admin tokens and the CA live in /data.
ENV PORTCULLIS_POLICY=/app/policies/default.yaml \
    PORTCULLIS_LISTEN=0.0.0.0:3128 \
    PORTCULLIS_ADMIN_LISTEN=0.0.0.0:9090 \
    PORTCULLIS_STORE=file:/data/state.json \
    PORTCULLIS_ADMIN_TOKEN_FILE=/data/admin-tokens.json \
    PORTCULLIS_CA_DIR=/data/ca
USER 10001:10001
VOLUME ["/data"]
EXPOSE 3128 9090
# No curl in slim images: node probes the admin listener (PORTCULLIS_ADMIN_LISTEN, unix: too).
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
  CMD ["node", "/app/docker/healthcheck.mjs"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["node", "/app/dist/cli.js"]
CMD ["serve"]
