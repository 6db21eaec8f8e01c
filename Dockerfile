# The gateway's own container: small, non-root, health-checked.
#
#   docker build -t mcp-gateway .
#   docker run --rm -p 127.0.0.1:8765:8765 -v "$PWD/gateway.yaml:/etc/mcp-gateway/gateway.yaml:ro" mcp-gateway
#
# The config is read from /etc/mcp-gateway/gateway.yaml (mount yours there). Inside a container
# the gateway must listen on 0.0.0.0 to be reachable through a published port: the image does that
# by default, so publish the port on 127.0.0.1 only (as above) unless you put auth in front.
# Stdio backends run inside this container (Python ones work as is; add Node.js for npx servers).
# Docker backends need the engine socket mounted (-v /var/run/docker.sock:/var/run/docker.sock):
# that gives the gateway root-equivalent power over the host; only do it on a host you trust it with.
ARG BASE=python:3.11-slim-bookworm
FROM ${BASE}

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /opt/mcp-gateway
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY plugins ./plugins
RUN python3 -m pip install ".[demo]" \
 && useradd --system --uid 10001 --home-dir /var/lib/mcp-gateway --create-home mcp \
 && mkdir -p /etc/mcp-gateway
COPY gateway.yaml /etc/mcp-gateway/gateway.yaml

USER 10001
WORKDIR /var/lib/mcp-gateway
EXPOSE 8765
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD python3 -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8765/healthz', timeout=2).status != 200)"
ENTRYPOINT ["mcp-gateway", "serve", "--config", "/etc/mcp-gateway/gateway.yaml", "--host", "0.0.0.0"]
