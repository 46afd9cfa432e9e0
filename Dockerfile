# legible's study server as a container image (docs/deploy.md). Build from the repository root:
#   docker build -t legible .
# The database lives on the /data volume, the study folders on /studies; the process runs as the
# unprivileged user "node" (uid 1000), and the application files belong to root (read-only to it).

FROM node:20-bookworm-slim AS build
# better-sqlite3 compiles from source where no prebuilt binary can be fetched.
RUN apt-get update && apt-get install -y --no-install-recommends python3 make g++ && rm -rf /var/lib/apt/lists/*
# package.json's allowScripts (which skips onnxruntime-node's CUDA download) needs npm >= 11.19.
RUN npm install -g npm@11.19.1
WORKDIR /legible
COPY . .
# Installs every workspace and builds the participant client (client/dist) through `prepare`.
RUN npm ci --no-audit --no-fund

FROM node:20-bookworm-slim
ENV NODE_ENV=production \
    HOST=0.0.0.0 \
    PORT=3000 \
    LEGIBLE_DB=/data/legible.db
COPY --from=build /legible /legible
RUN mkdir -p /data /studies /backups && chown node:node /data /studies /backups
USER node
WORKDIR /legible
VOLUME ["/data", "/studies"]
EXPOSE 3000
# /healthz answers 200 while the server and its database answer (server/API.md). The start
# period covers a first start that builds a study's stimuli.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10m --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.PORT || 3000) + '/healthz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# `docker run IMAGE` serves the studies in /studies; `docker run IMAGE backup --dir /backups`
# (or any other legible command) runs that command instead.
ENTRYPOINT ["node", "/legible/bin/legible.mjs"]
CMD ["serve", "--studies", "/studies"]
