# The image of the Fly.io apps (fly.toml, deploy/fly.self-hosted.toml) and of
# the Kubernetes manifests (deploy/k8s): the fan-out gateway, the audit
# consumer and the webhook worker (webhooks, and mobile push when FCM is
# configured), one binary each, run as three process groups on Fly and three
# Deployments on Kubernetes; and the edge exporter (the edge Worker's
# Analytics Engine data as Prometheus counters), a fourth Deployment. Built
# by `fly deploy`; not used locally, where scripts/up.sh runs the binaries
# directly.
FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p synckairos-fanout-gateway -p synckairos-audit-consumer -p synckairos-webhook-worker -p synckairos-edge-exporter

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/fanout-gateway /usr/local/bin/fanout-gateway
COPY --from=build /src/target/release/audit-consumer /usr/local/bin/audit-consumer
COPY --from=build /src/target/release/webhook-worker /usr/local/bin/webhook-worker
COPY --from=build /src/target/release/edge-exporter /usr/local/bin/edge-exporter
# LISTEN / METRICS_LISTEN as deployed: gateway 8788/9091, audit consumer
# 8789/9092, webhook worker 8791/9093, edge exporter 8793/9094 (on Fly every
# group's LISTEN is 8788).
EXPOSE 8788 8789 8791 8793 9091 9092 9093 9094
USER 65534
# fly.toml's [processes] (or a Deployment's command) say which binary runs.
CMD ["/usr/local/bin/fanout-gateway"]
