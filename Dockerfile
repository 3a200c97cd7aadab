# trustgate webhook and controller image. The chart runs `trustgate serve` or `trustgate controller` from it.
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY webhook ./webhook
COPY controller ./controller
RUN python -m venv /opt/trustgate \
 && /opt/trustgate/bin/pip install --no-cache-dir --upgrade pip \
 && /opt/trustgate/bin/pip install --no-cache-dir .

FROM python:3.11-slim-bookworm
# gpg verifies simple signatures in a throw-away home per TrustStore; nothing else is installed.
RUN apt-get update \
 && apt-get install -y --no-install-recommends gnupg \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/trustgate /opt/trustgate
ENV PATH=/opt/trustgate/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# A fixed non-root UID, so that pod security "restricted" (runAsNonRoot) can check it without a name lookup.
USER 65532:65532
EXPOSE 8443
ENTRYPOINT ["trustgate"]
CMD ["serve", "--config", "/etc/trustgate/config", "--host", "0.0.0.0", "--port", "8443"]
