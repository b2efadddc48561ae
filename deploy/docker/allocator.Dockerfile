# syntax=docker/dockerfile:1
# The allocator image. Build from the repository root (BuildKit):
#   docker build -f deploy/docker/allocator.Dockerfile -t localhost/purelb/allocator:0.1.0 .
# Runs as 65534 with no capabilities (deploy/base/allocator.yaml).

ARG RUST_VERSION=1.95
FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
# The target directory is a cache mount, so the binary is copied out in the
# same step.
RUN --mount=type=cache,id=purelb-cargo-registry,target=/usr/local/cargo/registry \
    --mount=type=cache,id=purelb-target-allocator,target=/src/target \
    cargo build --release --locked -p purelb-allocator --bin allocator \
 && install -D -m 0755 target/release/allocator /out/allocator

# glibc and libgcc only (the binary links them dynamically); same Debian
# release as the build stage.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/allocator /usr/local/bin/allocator
USER 65534:65534
EXPOSE 7472
ENTRYPOINT ["/usr/local/bin/allocator"]
