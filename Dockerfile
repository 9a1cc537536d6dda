# edgerq — one image for both roles: `sc CONFIG.xml` (public host) or
# `sp CONFIG.xml` (private site). The config is mounted, never baked in.
#
#   docker build -t edgerq:$(python3 -c 'import re;print(re.search(r"__version__ = \"(.*)\"",open("src/edgerq/__init__.py").read())[1])') .
#   docker run --rm --read-only -v $PWD/consumer.xml:/etc/edgerq/consumer.xml:ro edgerq:0.1.0 sc /etc/edgerq/consumer.xml
#
# The Python dependencies come from requirements/image.lock: pinned, every
# file checked against its SHA-256 (pip --require-hashes). Regenerate the lock
# after changing pyproject.toml with `make lock` (see docs/production.md).
# Runs as uid 10001, writes nothing outside mounted volumes (read-only root
# filesystem works), and checks its config (`edgerq check`) before it starts.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# a pip-less venv: only edgerq and its locked dependencies go into the final image
RUN python -m venv --without-pip /opt/edgerq
COPY requirements/image.lock /src/requirements/image.lock
RUN pip --python /opt/edgerq/bin/python install --require-hashes --only-binary=:all: \
        -r /src/requirements/image.lock
COPY pyproject.toml README.md /src/
COPY src/ /src/src/
# edgerq itself, as a wheel built here (setuptools is only a build tool: it
# does not reach the image); --no-deps: the lock above is all there is
RUN pip wheel --quiet --no-deps --wheel-dir /wheels /src \
 && pip --python /opt/edgerq/bin/python install --no-deps /wheels/edgerq-*.whl \
 && find /opt/edgerq -name '__pycache__' -type d -prune -exec rm -rf {} + \
 && /opt/edgerq/bin/python -c 'import edgerq, lxml, qh3, cryptography, prometheus_client, uvloop'

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/edgerq/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
COPY --from=build /opt/edgerq /opt/edgerq
COPY scripts/container-healthcheck /usr/local/bin/edgerq-healthcheck
COPY scripts/edgerq-entrypoint /usr/local/bin/edgerq-entrypoint
RUN useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent edgerq \
 && chmod 0755 /usr/local/bin/edgerq-healthcheck /usr/local/bin/edgerq-entrypoint \
 && mkdir -p /etc/edgerq /var/lib/edgerq && chown 10001:10001 /var/lib/edgerq \
 && edgerq --version
LABEL org.opencontainers.image.title=edgerq \
      org.opencontainers.image.description="edgerq SC and SP: reverse tunnels to TCP services"
USER 10001:10001
WORKDIR /var/lib/edgerq
# healthy = /readyz of the <admin> endpoint the config must declare on 9100
HEALTHCHECK --interval=5s --timeout=3s --retries=3 --start-period=20s \
  CMD ["edgerq-healthcheck", "http", "http://127.0.0.1:9100/readyz"]
ENTRYPOINT ["edgerq-entrypoint"]
CMD ["--help"]
