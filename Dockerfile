# The mcpctl image, built in stages. Building it needs the base images below
# from a registry (docker.io); on a machine without registry access, build
# the binary with cargo instead (see README).
#
#   docker build -t mcpctl .
#   docker run --rm -v /var/run/docker.sock:/var/run/docker.sock -v "$PWD/fleet:/fleet" mcpctl plan /fleet

# 1. Build: a release binary. libssl-dev and pkg-config are for git2's https.
FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends pkg-config libssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
COPY tests ./tests
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin mcpctl \
 && cp target/release/mcpctl /mcpctl

# 2. Run: a slim base with CA certificates for https sources and registries.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 git \
 && rm -rf /var/lib/apt/lists/*
# Root by default: it talks to the Docker socket mounted in.
COPY --from=build /mcpctl /usr/local/bin/mcpctl
COPY schemas /usr/share/mcpctl/schemas
ENV MCPCTL_STATE=/var/lib/mcpctl/state.redb
VOLUME /var/lib/mcpctl
ENTRYPOINT ["mcpctl"]
CMD ["--help"]
