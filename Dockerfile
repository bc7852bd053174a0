# sidekey as a container: a static-ish release binary on a distroless base,
# running as a non-root user.
#
#   docker build -t sidekey .
#   docker run --rm -p 8080:8080 \
#     -v "$PWD/sidekey.toml:/etc/sidekey/sidekey.toml:ro" \
#     -e COPILOT_CLIENT_ID -e COPILOT_CLIENT_SECRET sidekey
#
# The config is read from /etc/sidekey/sidekey.toml (SIDEKEY_CONFIG). Inside
# a container the proxy must listen on 0.0.0.0: write
# `listen = "${SIDEKEY_LISTEN:-0.0.0.0:8080}"` in [proxy] (see
# config/examples/docker.toml). Secrets come from the environment (${VAR} in
# the config) or from mounted files (token `source = "file"`).

FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin sidekey \
 && cp target/release/sidekey /sidekey

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /sidekey /usr/local/bin/sidekey
ENV SIDEKEY_CONFIG=/etc/sidekey/sidekey.toml \
    SIDEKEY_LISTEN=0.0.0.0:8080 \
    RUST_LOG=info
USER nonroot:nonroot
EXPOSE 8080 9901
ENTRYPOINT ["/usr/local/bin/sidekey"]
CMD ["run", "--log-format", "json"]
