# The image of the Fly.io app (fly.toml): the fan-out gateway and the audit
# consumer, one binary each, run as two process groups. Built by `fly deploy`;
# not used locally, where scripts/up.sh runs the binaries directly.
FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p synckairos-fanout-gateway -p synckairos-audit-consumer

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/fanout-gateway /usr/local/bin/fanout-gateway
COPY --from=build /src/target/release/audit-consumer /usr/local/bin/audit-consumer
EXPOSE 8788 8789 9091 9092
USER 65534
# fly.toml's [processes] say which binary a machine runs.
CMD ["/usr/local/bin/fanout-gateway"]
