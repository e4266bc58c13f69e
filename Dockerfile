# syntax=docker/dockerfile:1
# runwatch: the worker (`run`), the webhook ingest (`ingest`) and the one-shot commands.
#
#   docker build -t runwatch .
#   docker run --rm runwatch --help
#
# Build stage: the official Rust image, a locked release build. BuildKit cache mounts keep
# the registry and target/ between builds; the binary is copied out of the cache mount.
ARG RUST_VERSION=1.95
FROM rust:${RUST_VERSION}-slim-bookworm AS build
# The commit, for the git_sha label of runwatch_build_info (the context has no .git):
#   docker build --build-arg RUNWATCH_GIT_SHA=$(git rev-parse --short=12 HEAD) .
ARG RUNWATCH_GIT_SHA=unknown
ENV RUNWATCH_GIT_SHA=${RUNWATCH_GIT_SHA}
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
# The SQL macros compile against the committed metadata (.sqlx/), never a database:
# .cargo/config.toml sets SQLX_OFFLINE=true.
COPY .cargo ./.cargo
COPY .sqlx ./.sqlx
COPY src ./src
COPY migrations ./migrations
COPY config ./config
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
    && install -D -m 0755 target/release/runwatch /out/runwatch

# Runtime stage: distroless with glibc and libgcc (what a Rust binary links), CA
# certificates for TLS to NATS and Postgres, no shell, no package manager, and the
# `nonroot` user (uid/gid 65532).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/runwatch /usr/local/bin/runwatch
# The defaults are compiled into the binary; this copy is the commented reference.
COPY config/default.toml /etc/runwatch/default.toml
USER 65532:65532
# Inside a container the listeners must not be loopback. Environment variables win over a
# --config file: override these with -e / env, not in the file.
ENV RUNWATCH_HTTP__LISTEN=0.0.0.0:9464 \
    RUNWATCH_INGEST__LISTEN=0.0.0.0:8080 \
    RUNWATCH_LOG__FORMAT=json
# 9464: /healthz, /readyz, /metrics of `runwatch run`; 8080: the webhooks of `runwatch ingest`.
EXPOSE 9464 8080
ENTRYPOINT ["runwatch"]
CMD ["run"]
