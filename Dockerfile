# Multi-stage build: compile in the Rust image, run in a slim Debian.
# scripts/docker-check.sh (run by scripts/test.sh) builds the build stage the way Docker
# would and starts the binary with this file's CMD and ENV, so the two cannot drift.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# The web UI's templates and assets are compiled into the binary.
COPY templates ./templates
COPY assets ./assets
# The manifest names this bench target; cargo refuses a manifest whose target is missing.
COPY benches/symbolicate.rs ./benches/symbolicate.rs
# SQLite is compiled in (rusqlite's `bundled`) with the image's C compiler.
RUN cargo build --release --locked --bin crashbox

FROM debian:bookworm-slim
# The binary links only glibc, libgcc and libstdc++ (all in the base image); HTTPS
# clients need the CA roots.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home /var/lib/crashbox crashbox \
    && mkdir -p /var/lib/crashbox/data /var/lib/crashbox/dsyms \
    && chown -R crashbox /var/lib/crashbox
COPY --from=build /src/target/release/crashbox /usr/local/bin/crashbox
USER crashbox
ENV CRASHBOX_DATA_DIR=/var/lib/crashbox/data \
    CRASHBOX_DSYMS_DIR=/var/lib/crashbox/dsyms
VOLUME ["/var/lib/crashbox/data", "/var/lib/crashbox/dsyms"]
EXPOSE 8080
ENTRYPOINT ["crashbox"]
CMD ["serve", "--listen", "0.0.0.0:8080"]
