# The demo service (gateway, orders, payments, auth and the load generator).
# Build context: target/image-context/demo (staged by scripts/images.sh).
FROM debian:bookworm-slim

COPY immune-demo-service /usr/local/bin/immune-demo-service

ENV PORT=8080
EXPOSE 8080
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/immune-demo-service"]
