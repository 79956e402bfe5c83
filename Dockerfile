# The Meridian image: one image for every Meridian process of docker-compose.yml (router, control plane,
# simulator, Toxiproxy-compatible server); the service's command picks the subcommand, e.g.
#   docker run --rm meridian:local router --config /etc/meridian/router.yaml
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# .dockerignore keeps the virtualenv, tests and local state out of the context.
COPY . .
RUN pip install . \
    && useradd --system --uid 10001 --home-dir /var/lib/meridian --create-home --shell /usr/sbin/nologin meridian \
    && rm -rf /src

# Routers persist their last good table here (state_dir in deploy/routers/*.yaml).
WORKDIR /var/lib/meridian
# By number: Kubernetes' runAsNonRoot can only check a numeric user (deploy/k8s runs it as 10001).
USER 10001

ENTRYPOINT ["meridian"]
CMD ["--help"]
