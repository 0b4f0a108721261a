# The five immune stages and the console in one image; docker-compose.yml picks the command.
# Build context: target/image-context/immune (staged by scripts/images.sh):
#   bin/immune-{collector,detector,decider,executor,chaos,console}
#   bin/immune (the operator CLI; log in as `operator`: see scripts/immune)
#   config/{collector,detector,decider,executor,chaos,console}.toml
FROM debian:bookworm-slim

COPY bin/immune-collector bin/immune-detector bin/immune-decider bin/immune-executor bin/immune-chaos bin/immune-console /usr/local/bin/
COPY bin/immune /usr/local/bin/
COPY config/ /etc/immune/

ENV RUST_LOG=info
