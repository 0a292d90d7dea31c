# The chat example (examples/chat.rs) on the embedded Raft backend, for
# docker-compose.yml: `docker compose up --build --scale dref-example=3`.

FROM rust:1-bookworm AS builder
WORKDIR /src
COPY . .
# The registry and target caches speed up rebuilds; the binary is copied
# out of the cached target directory in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p dref-examples --example chat \
    && cp target/release/examples/chat /usr/local/bin/dref-chat

FROM debian:bookworm-slim
COPY --from=builder /usr/local/bin/dref-chat /usr/local/bin/dref-chat
# The replicas' data directories (a volume in docker-compose.yml), each in
# a subdirectory named after its container, so that a restarted container
# comes back as the same member with its log.
RUN mkdir -p /data && chown nobody /data
# Raft traffic between the replicas (gRPC).
ENV DREF_PORT=8082
EXPOSE 8082
USER nobody
ENTRYPOINT ["/bin/sh", "-c", "DREF_DATA_DIR=/data/$(hostname) exec /usr/local/bin/dref-chat"]
