# The podcopy agent image: one static binary on an empty base, non-root, no shell.
# The binary is built first (make build-linux; CGO_ENABLED=0), the way ko and goreleaser
# images are made, so this builds daemonless with buildah and without pulling a base image.
# One Dockerfile for every architecture: buildah bud --platform linux/amd64,linux/arm64 sets
# TARGETARCH, and make image-multiarch builds both binaries first (nothing runs in the image,
# so no emulation is needed to build it).
FROM scratch
ARG TARGETARCH=amd64
COPY bin/linux/${TARGETARCH}/podcopy-agent /podcopy-agent
USER 65532:65532
ENTRYPOINT ["/podcopy-agent"]
