# Courier's server image, as fly.toml deploys it (docs/deploy.md). Three stages: cargo-chef
# plans the dependency graph, the builder compiles the dependencies alone (a layer that
# stays cached until Cargo.lock or a manifest changes) and then the server with the same
# command as scripts/test.sh, and the runtime is a slim Debian with CA certificates only.
#
# server/tests/common/image.rs reads the last stage (ENV, USER, ENTRYPOINT, CMD, EXPOSE)
# and server/tests/processes.rs starts the release binary exactly as this image would:
# keep those instructions in the exec form and USER numeric.

FROM rust:1.95.0-bookworm AS chef
# Pinned: a new cargo-chef may change the recipe format between the two stages' caches.
RUN cargo install cargo-chef --locked --version 0.1.78
WORKDIR /build

FROM chef AS planner
# Every workspace member's manifest (and sources) is needed to load the workspace.
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /build/recipe.json recipe.json
RUN cargo chef cook --release --locked -p courier-server --recipe-path recipe.json
COPY . .
RUN cargo build --release --locked -p courier-server --bin courier-server

FROM debian:bookworm-slim AS runtime
# CA certificates for TLS to PostgreSQL (sslmode=verify-full) and NATS; nothing else. The
# version is bookworm's (its security updates keep the prefix). The user has fixed ids so
# file ownership and the tests' `USER` agree; it has no home and no shell.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates=20230311* \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 courier \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin courier
COPY --from=builder /build/target/release/courier-server /usr/local/bin/courier-server
# Dual-stack listeners: the public API on 8080 (fly.toml's internal_port) and the private
# one (metrics, probes, admin API) on 9091 (fly.toml's [metrics] port; Fly's proxy does
# not route the public to it). Migrations run once per deploy as fly.toml's
# release_command (`courier-server migrate`), so a starting process only checks the
# schema.
ENV COURIER_LISTEN="[::]:8080" \
    COURIER_ADMIN_LISTEN="[::]:9091" \
    COURIER_MIGRATE_ON_START="false"
USER 10001:10001
EXPOSE 8080 9091
# The image has no curl: the binary probes its own /healthz.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["courier-server", "healthcheck"]
ENTRYPOINT ["courier-server"]
CMD ["serve"]
