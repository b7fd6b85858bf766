# Multi-stage: a Swift builder, then a slim runtime with only what the binary links.
FROM swift:6.3-bookworm AS builder
RUN apt-get update && apt-get install -y --no-install-recommends libssl-dev libsqlite3-dev libcurl4-openssl-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Package.swift ./
COPY Sources ./Sources
COPY Plugins ./Plugins
COPY Tests ./Tests
RUN swift build -c release --product secureconf --static-swift-stdlib \
    && cp "$(swift build -c release --show-bin-path)/secureconf" /secureconf

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends libssl3 libsqlite3-0 libcurl4 ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/secureconf --create-home secureconf \
    && mkdir -p /var/lib/secureconf/data /var/log/secureconf && chown -R secureconf /var/lib/secureconf /var/log/secureconf
COPY --from=builder /secureconf /usr/local/bin/secureconf
USER secureconf
WORKDIR /var/lib/secureconf
ENV OSC_HOST=0.0.0.0 \
    OSC_HOST_PORT=9000 \
    OSC_DATABASE_PATH=/var/lib/secureconf/data/configurations.db \
    OSC_SALT_FILE_PATH=/var/lib/secureconf/data/encryption.salt \
    OSC_LOG_FILE=/var/log/secureconf/secureconf.log
VOLUME ["/var/lib/secureconf/data", "/var/log/secureconf"]
EXPOSE 9000
HEALTHCHECK --interval=10s --timeout=3s --retries=3 CMD curl -fsS http://127.0.0.1:9000/cluster/health || exit 1
ENTRYPOINT ["/usr/local/bin/secureconf"]
CMD ["serve"]
