# Build: Debian 12 with the same toolchain `cargo xtask setup` installs (Debian's rustc-web with
# the BPF core, LLVM 22, bpf-linker), so the image builds exactly what CI tests.
FROM debian:bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends \
        ca-certificates curl build-essential pkg-config \
    && rm -rf /var/lib/apt/lists/*
# rustup's stable for xtask; xtask setup installs the rest (Debian toolchain, bpf-linker).
RUN curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
ENV PATH=/root/.cargo/bin:$PATH
WORKDIR /src
COPY . .
RUN cargo xtask setup && cargo xtask build --release

# Run: the agent binary alone, its eBPF object embedded.
FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/palisade /usr/local/bin/palisade
ENTRYPOINT ["/usr/local/bin/palisade"]
