# syntax=docker/dockerfile:1
# The lbnodeagent image (the node agent with its embedded BGP speaker). Build
# from the repository root with BuildKit (Docker 23 or later, buildx, or
# buildah/podman):
#   docker build -f deploy/docker/lbnodeagent.Dockerfile -t localhost/purelb/lbnodeagent:0.1.0 .
#
# The binary carries file capabilities (NET_ADMIN, NET_RAW, NET_BIND_SERVICE,
# effective): that is how a non-root process gets the capabilities the
# DaemonSet adds (see deploy/base/lbnodeagent.yaml). They are set in the build
# stage; the multi-stage COPY must carry the security.capability xattr into the
# final image, which not every builder does. Check an image: without the
# capabilities in its bounding set the binary must refuse to start,
#   docker run --rm --cap-drop ALL localhost/purelb/lbnodeagent:0.1.0 --help
# fails with "operation not permitted"; if it prints the help instead, the
# builder dropped the file capabilities (see deploy/README.md).

ARG RUST_VERSION=1.95
FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libcap2-bin \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The target directory is a cache mount, so the binary is copied out in the
# same step.
RUN --mount=type=cache,id=purelb-cargo-registry,target=/usr/local/cargo/registry \
    --mount=type=cache,id=purelb-target-lbnodeagent,target=/src/target \
    cargo build --release --locked -p purelb-agent --bin lbnodeagent \
 && install -D -m 0755 target/release/lbnodeagent /out/lbnodeagent \
 && setcap cap_net_admin,cap_net_raw,cap_net_bind_service=ep /out/lbnodeagent \
 && getcap /out/lbnodeagent

# glibc and libgcc only (the binary links them dynamically); same Debian
# release as the build stage.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/lbnodeagent /usr/local/bin/lbnodeagent
USER 65534:65534
EXPOSE 7472 179
ENTRYPOINT ["/usr/local/bin/lbnodeagent"]
