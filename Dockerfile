# syntax=docker/dockerfile:1
# One image for the whole project: the operator and every stage binary in
# /usr/local/bin; a Deployment's `command` picks which one runs.
#
#   docker build -t eventpipe:dev .
#
# Build stage: Debian bookworm with Rust 1.95. rdkafka builds its bundled librdkafka
# with gcc/make and links the system OpenSSL and zlib. BuildKit cache mounts keep the
# cargo registry and target/ between builds, so a source change recompiles only the
# workspace crates, not the dependencies.
ARG RUST_VERSION=1.95
FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends pkg-config libssl-dev zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# .dockerignore lets in only the workspace manifests, the lock file and the crates.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked \
      -p eventpipe-operator -p producer -p feature-processor -p intervention -p dashboard \
 && mkdir -p /out/bin \
 && cp target/release/eventpipe-operator target/release/producer target/release/feature-processor \
       target/release/intervention target/release/dashboard /out/bin/
# Binaries + exactly the shared libraries ldd lists for them, checked by running each
# binary inside the assembled tree.
RUN scripts/image-rootfs.sh /out/bin /out/rootfs

# Runtime: nothing but what image-rootfs.sh assembled (all of it from bookworm) —
# no shell, no package manager; runs as uid/gid 65532.
FROM scratch
COPY --from=build /out/rootfs /
ENV PATH=/usr/local/bin
USER 65532:65532
CMD ["eventpipe-operator", "run"]
