# The five immune stages in one image; docker-compose.yml picks the command.
# Build context: target/image-context/immune (staged by scripts/images.sh):
#   bin/immune-{collector,detector,decider,executor,chaos}
#   config/{collector,detector,decider,executor,chaos}.toml
FROM debian:bookworm-slim

COPY bin/immune-collector bin/immune-detector bin/immune-decider bin/immune-executor bin/immune-chaos /usr/local/bin/
COPY config/ /etc/immune/

ENV RUST_LOG=info
