# The podcopy agent image: one static binary on an empty base, non-root, no shell.
# The binary is built first (make build-linux; CGO_ENABLED=0), the way ko and goreleaser
# images are made, so this builds daemonless with buildah and without pulling a base image.
FROM scratch
COPY bin/linux/podcopy-agent /podcopy-agent
USER 65532:65532
ENTRYPOINT ["/podcopy-agent"]
