# nats-server with JetStream for immune, built without a registry: the static
# nats-server binary comes from the host (see scripts/images.sh).
# Build context: target/image-context/nats: nats-server, nats-server.conf
FROM debian:bookworm-slim

COPY nats-server /usr/local/bin/nats-server
COPY nats-server.conf /etc/nats/nats-server.conf

VOLUME /data
EXPOSE 4222 8222
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/nats-server"]
# The users' passwords come from the environment (see nats-server.conf).
CMD ["-c", "/etc/nats/nats-server.conf", "-sd", "/data/jetstream"]
