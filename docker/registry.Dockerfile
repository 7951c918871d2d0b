# shoal-registry:dev — the CNCF distribution registry (static build of
# github.com/distribution/distribution/v3/cmd/registry), used as the upstream
# registry of examples/compose. Built by `make images`.
FROM scratch
COPY --chown=65532:65532 empty/ /var/lib/registry/
COPY --chown=65532:65532 empty/ /tmp/
COPY registry-config.yml /etc/distribution/config.yml
COPY registry /registry
USER 65532:65532
EXPOSE 5000
ENTRYPOINT ["/registry"]
CMD ["serve", "/etc/distribution/config.yml"]
