# Multi-stage build: compile in the Rust image, run in a slim Debian.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --release --locked --bin crashbox

FROM debian:bookworm-slim
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
