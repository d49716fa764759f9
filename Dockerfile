# The issuer image: `issuer` (init, serve, the admin verbs, demo) on Python 3.12.
# docker-compose.yml runs it as a one-shot `issuer init`, two `issuer serve` replicas and the demo services.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# An unprivileged user that owns the key folder. A named volume mounted on /var/lib/issuer/keys starts
# as a copy of this empty, 0700 folder, so `issuer init` can write the keys and the pepper there.
RUN groupadd --system --gid 10001 issuer \
 && useradd --system --uid 10001 --gid issuer --home-dir /var/lib/issuer --no-create-home issuer \
 && install -d -o issuer -g issuer -m 0700 /var/lib/issuer /var/lib/issuer/keys

WORKDIR /app
COPY pyproject.toml README.md ./
COPY issuer ./issuer
COPY migrations ./migrations
# Editable install: `issuer init` runs the Alembic migrations that sit next to the package (issuer/migrate.py).
RUN pip install -e '.[server]'

USER issuer
ENV ISSUER_HOST=0.0.0.0 \
    ISSUER_KEYS_DIR=/var/lib/issuer/keys
EXPOSE 8000
CMD ["issuer", "serve"]
