# The `millrace` binary in a small image, to run `millrace worker` (or any
# other command: the entry point is the binary).
#
#   docker build -t millrace .
#   docker run --rm -v "$PWD/worker.toml:/etc/millrace/worker.toml:ro" \
#       -e MILLRACE_REDIS_URL=redis://redis:6379 -p 9464:9464 millrace
#
# In the TOML, `[metrics] listen = "0.0.0.0:9464"` (the default listens on
# loopback, which is the container's own). An `exec` handler's program must
# be in the image: build your own image FROM this one and COPY it in.
#
# scripts/check-dockerfile builds the binary the way this file does (from
# the same build context, with the same command), with docker when it
# works and without it otherwise.

# Build stage: the same toolchain image for every build of this file; the
# Cargo.lock pins every dependency (--locked).
ARG RUST_IMAGE=rust:bookworm
FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin millrace

# Runtime stage: Debian's slim image (the same glibc as the build stage),
# the CA certificates for rediss:// and https:// handlers, a user without
# a shell or home, and the binary.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 millrace \
    && useradd --system --uid 10001 --gid millrace --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin millrace \
    && mkdir -p /etc/millrace
COPY --from=build /src/target/release/millrace /usr/local/bin/millrace
USER 10001:10001
# The worker's /metrics and /healthz when its TOML listens there.
EXPOSE 9464
ENTRYPOINT ["millrace"]
CMD ["worker", "--config", "/etc/millrace/worker.toml"]
