# healthbook-gateway container image: `docker build -t healthbook-gateway .` from the repository root.
# The gateway runs as the unprivileged user `healthbook` (uid 10001); all its data is under the volume
# /var/lib/healthbook-gateway (SQLite store, payload key, development certificate). Back that volume up.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/healthbook-gateway
WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
# Exact versions from constraints.txt (the ones `make test` ran with), so two builds install the same code.
RUN /opt/healthbook-gateway/bin/pip install --constraint constraints.txt --upgrade pip
COPY gateway/ gateway/
COPY mappings/ mappings/
COPY adapters/ adapters/
RUN /opt/healthbook-gateway/bin/pip install --constraint constraints.txt .

FROM python:3.11-slim
LABEL org.opencontainers.image.title="healthbook-gateway" \
      org.opencontainers.image.description="Hospital HL7 v2 / FHIR feeds to the Vietnamese national e-health book"
RUN groupadd --system --gid 10001 healthbook \
    && useradd --system --uid 10001 --gid healthbook --home-dir /var/lib/healthbook-gateway \
       --no-create-home --shell /usr/sbin/nologin healthbook \
    && install -d -o healthbook -g healthbook -m 0750 /var/lib/healthbook-gateway \
    && install -d -m 0755 /etc/healthbook-gateway
COPY --from=build /opt/healthbook-gateway /opt/healthbook-gateway
COPY deploy/config.example.toml /etc/healthbook-gateway/gateway.toml
# Inside a container the listeners must face the container network; publish ports with care.
ENV PATH=/opt/healthbook-gateway/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HBGW_MLLP__HOST=0.0.0.0 \
    HBGW_HTTP__HOST=0.0.0.0
WORKDIR /var/lib/healthbook-gateway
USER healthbook:healthbook
VOLUME ["/var/lib/healthbook-gateway"]
EXPOSE 2575 8080
# Healthy means ready: /readyz answers 200 once the store is open and the listeners take messages (503
# while starting or stopping). docker-compose.yml runs the same check; deploy/README.md, "Health endpoints".
# Plain HTTP on the port from HBGW_HTTP__PORT (default 8080); with http.tls enabled, use https here.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('HBGW_HTTP__PORT', '8080') + '/readyz', timeout=4)"]
ENTRYPOINT ["healthbook-gateway"]
CMD ["serve", "--config", "/etc/healthbook-gateway/gateway.toml"]
