# The gateway's own container: small, non-root, health-checked.
#
#   docker build -t mcp-gateway .
#   docker run --rm --init -p 127.0.0.1:8765:8765 \
#     -v "$PWD/gateway.yaml:/etc/mcp-gateway/gateway.yaml:ro" mcp-gateway
#
# The entrypoint is `mcp-gateway`; with no arguments the image serves its config (the CMD below).
# Arguments replace the CMD and are a whole `mcp-gateway` command line, e.g.
#   docker run ... mcp-gateway serve --config /etc/mcp-gateway/gateway.yaml --host 0.0.0.0
#   docker run ... mcp-gateway check --no-start --config /etc/mcp-gateway/gateway.yaml
#
# The config is read from /etc/mcp-gateway/gateway.yaml (mount yours there). Inside a container
# the gateway must listen on 0.0.0.0 to be reachable through a published port: the image does that
# by default, so publish the port on 127.0.0.1 only (as above) unless you put auth in front.
# Stdio backends run inside this container (Python ones installed into /opt/mcp-gateway/venv work;
# the `demo` extra's mcp-server-time is there; add Node.js for npx servers).
# Docker backends need the engine socket mounted (-v /var/run/docker.sock:/var/run/docker.sock):
# that gives the gateway root-equivalent power over the host; only do it on a host you trust it with.
# --init: the gateway handles SIGTERM itself, but as PID 1 it would not reap orphaned grandchildren
# of its stdio servers. State (admin events) goes to the volume /var/lib/mcp-gateway: name it
# (-v mcp-gateway-state:/var/lib/mcp-gateway) to keep it across container re-creation. Tested
# hardened: --read-only --tmpfs /tmp --cap-drop ALL --security-opt no-new-privileges.
#
# Health: HEALTHCHECK polls $MCP_GATEWAY_HEALTHCHECK_URL (default http://127.0.0.1:8765/healthz).
# Serving on another port (listen.port in the config, or --port)? Set it to match, e.g.
#   -e MCP_GATEWAY_HEALTHCHECK_URL=http://127.0.0.1:9000/healthz
#
# Build inputs:
#   BASE   any Debian-like image with python3.11 and its venv module; python:3.11-slim-bookworm by
#          default. Debian's own python3 (+ python3-venv) works too: everything goes into a venv, so
#          PEP 668 ("externally managed") does not apply.
#   dist/wheels/ (optional)  if it holds wheels, pip installs from them ONLY (--no-index): for
#          air-gapped builds, or hosts whose egress re-signs TLS with a CA the build cannot know.
#          Fill it where the index is reachable, best in the BASE image itself, so that environment
#          markers are resolved for its interpreter (Debian's 3.11.2 needs a wheel 3.11.7 does not):
#            docker run --rm --user "$(id -u):$(id -g)" -e HOME=/tmp -v "$PWD:/src" -w /src \
#              python:3.11-slim-bookworm pip wheel --wheel-dir dist/wheels ".[demo]" "setuptools>=68"
#          setuptools is there to build the gateway itself; the gateway's own wheel from that
#          command is ignored (.dockerignore): the image always builds the gateway from this tree.
#          Then `docker build --network none ...` proves the build needs nothing else.
#   PIP_INDEX_URL (optional)  a mirror or private index to install from instead of PyPI.
#   Without dist/wheels the build downloads from the index: with a daemon that has no bridge
#   network, build with `docker build --network host`.
ARG BASE=python:3.11-slim-bookworm

# Only what the dependency install depends on: the requirements pyproject.toml lists (with the
# `demo` extra) and the optional wheelhouse. The build stage copies them by content, so an edit
# elsewhere in pyproject.toml (version, test extras) keeps the slow install layer cached.
FROM ${BASE} AS requirements
# The [s] glob makes dist/wheels optional: COPY needs one match, and pyproject.toml always is one.
COPY pyproject.toml dist/wheel[s] /in/
RUN set -e; mkdir /out; cd /in; \
    python3 -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; \
print("\n".join(p["dependencies"] + p["optional-dependencies"]["demo"]))' >/out/requirements.txt; \
    if ls ./*.whl >/dev/null 2>&1; then \
      mv ./*.whl /out/ && printf '[global]\nno-index = true\nfind-links = /tmp/wheels\n' >/out/pip.conf; \
    fi

FROM ${BASE} AS build
# A private index or PyPI mirror: --build-arg PIP_INDEX_URL=https://mirror.example/simple/ (pip
# reads it from the environment; a build-stage ARG, so the runtime image's history has no trace).
ARG PIP_INDEX_URL
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore \
    PIP_CONFIG_FILE=/tmp/wheels/pip.conf
RUN python3 -m venv /opt/mcp-gateway/venv
COPY --from=requirements /out/ /tmp/wheels/
RUN /opt/mcp-gateway/venv/bin/pip install --no-warn-script-location -r /tmp/wheels/requirements.txt
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY plugins ./plugins
# pip check: the dependency layer above must satisfy the gateway as built now. pip and setuptools
# only install things: the runtime image does without them.
RUN /opt/mcp-gateway/venv/bin/pip install --no-deps --no-warn-script-location . \
 && /opt/mcp-gateway/venv/bin/pip check \
 && /opt/mcp-gateway/venv/bin/python -m pip uninstall --yes --quiet pip setuptools

FROM ${BASE}
ENV PATH=/opt/mcp-gateway/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    XDG_STATE_HOME=/var/lib/mcp-gateway/state \
    MCP_GATEWAY_HEALTHCHECK_URL=http://127.0.0.1:8765/healthz
RUN groupadd --system --gid 10001 mcp \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/mcp-gateway --create-home \
      --shell /usr/sbin/nologin mcp \
 && mkdir -p /etc/mcp-gateway
COPY --from=build /opt/mcp-gateway/venv /opt/mcp-gateway/venv
COPY gateway.yaml /etc/mcp-gateway/gateway.yaml

USER 10001:10001
WORKDIR /var/lib/mcp-gateway
# The gateway's state (the admin event store, $XDG_STATE_HOME/mcp-gateway/events.db) lives here:
# a volume, so it outlives the container and stays writable under --read-only.
VOLUME /var/lib/mcp-gateway
EXPOSE 8765
# No proxy for the probe: an HTTP(S)_PROXY set for the backends must not catch 127.0.0.1.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["/opt/mcp-gateway/venv/bin/python", "-c", "import os, sys, urllib.request as u; r = u.build_opener(u.ProxyHandler({})).open(os.environ['MCP_GATEWAY_HEALTHCHECK_URL'], timeout=2); sys.exit(r.status != 200)"]
ENTRYPOINT ["mcp-gateway"]
CMD ["serve", "--config", "/etc/mcp-gateway/gateway.yaml", "--host", "0.0.0.0"]
