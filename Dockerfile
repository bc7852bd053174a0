# sidekey as a container: a stripped release binary on a distroless base,
# running as a non-root user.
#
#   docker build -t sidekey .
#   mkdir -p sidekey && cp config/examples/docker.toml sidekey/sidekey.toml
#   docker run --rm --name sidekey --stop-timeout 35 \
#     -p 127.0.0.1:8080:8080 \
#     -v "$PWD/sidekey:/etc/sidekey:ro" \
#     -e COPILOT_CLIENT_ID -e COPILOT_CLIENT_SECRET sidekey
#   docker kill -s HUP sidekey     # reload the config after editing it
#   docker stop -t 35 sidekey      # stop; in-flight requests drain first
#
# Publish on 127.0.0.1 only. A bare `-p 8080:8080` listens on every
# interface of the host, and sidekey adds the credentials to whatever it
# forwards: anyone who can reach the host could use your API accounts.
#
# Mount a directory, not a single file. An editor saves by writing a new
# file and renaming it over the old one; a single-file bind mount keeps the
# old file, so a SIGHUP would reload the old config. Through a directory
# mount the container sees the new file. Keep token files and stores there
# too. The config is read from /etc/sidekey/sidekey.toml (SIDEKEY_CONFIG).
#
# Stopping: on SIGTERM sidekey stops accepting and waits up to
# `drain_timeout` (default 30s; config/examples/docker.toml sets 8s) for
# in-flight requests, then exits 0. Docker sends SIGKILL after its grace
# period (default 10s; exit 137, requests cut off), so keep the grace above
# drain_timeout: `--stop-timeout`/`docker stop -t`, or compose's
# `stop_grace_period`.
#
# Inside a container the proxy must listen on 0.0.0.0: write
# `listen = "${SIDEKEY_LISTEN:-0.0.0.0:8080}"` in [proxy] (see
# config/examples/docker.toml). Secrets come from the environment (${VAR} in
# the config) or from mounted files (token `source = "file"`).

FROM rust:1-slim-bookworm AS build
# Cargo.toml keeps line tables in release builds for profiling on a host;
# the image gets a stripped binary instead (about 6 MB rather than 38 MB).
ENV CARGO_PROFILE_RELEASE_DEBUG=0 \
    CARGO_PROFILE_RELEASE_STRIP=true
WORKDIR /src

# Dependencies first, in their own layer: it is rebuilt only when
# Cargo.toml, Cargo.lock or the benches change. The stubs stand in for the
# crate's library and binary; the benches are copied as they are, because
# cargo reads every [[bench]] Cargo.toml declares (a missing one fails the
# build), and they are small and rarely change.
COPY Cargo.toml Cargo.lock ./
COPY benches ./benches
RUN mkdir -p src \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && cargo build --release --locked --bin sidekey

# Then the crate itself. COPY keeps the files' mtimes, which can be older
# than the stubs' build; touch them so that cargo rebuilds the crate.
COPY src ./src
RUN find src -type f -exec touch {} + \
 && cargo build --release --locked --bin sidekey \
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
