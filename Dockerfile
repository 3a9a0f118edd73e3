# syntax=docker/dockerfile:1
# One image for both binaries (not built in CI; no Docker engine runs there):
#   webhook-relay           the relay; the entrypoint, so the operator's relay Deployments
#                           need only args (serve --config ...)
#   webhook-relay-operator  the operator; the Helm chart sets it as the command
#
#   docker build -t ghcr.io/webhook-relay/webhook-relay:0.1.0 .

FROM rust:1-bookworm AS build
# aws-lc-sys (rustls' crypto) falls back to CMake where its cc build does not fit.
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p webhook-relay-sidecar -p webhook-relay-operator \
 && install -D -m 0755 -t /out target/release/webhook-relay target/release/webhook-relay-operator

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/webhook-relay /out/webhook-relay-operator /usr/local/bin/
USER 65532:65532
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/webhook-relay"]
