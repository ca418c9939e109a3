# Build: Debian 12 with exactly the toolchain `cargo xtask setup` installs for CI and developers
# (Debian's rustc-web/cargo-web 1.96 with the prebuilt BPF core, LLVM 22, bpf-linker from
# crates.io), so the image ships what the tests ran. Only Debian's archive and crates.io are
# reached: no rustup, no installer piped from the web.
FROM debian:bookworm AS build
# Debian's cargo to build and run xtask (rustc-web/cargo-web 1.96 are in bookworm-security,
# which the image's sources list) and a C toolchain to link; `xtask setup` adds the rest.
RUN apt-get update && apt-get install -y --no-install-recommends \
        ca-certificates build-essential pkg-config cargo-web rustc-web \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo xtask setup && cargo xtask build --release

# Run: the agent binary alone, its eBPF programs embedded.
FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/palisade /usr/local/bin/palisade
ENTRYPOINT ["/usr/local/bin/palisade"]
