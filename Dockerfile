# One image for every platform service. The compose bundle (deploy/compose) runs it once per service
# version and tells it which one it is: FINOPTI_SERVICE, FINOPTI_VERSION, FINOPTI_ENTRYPOINT (module:factory
# from mesh.yaml), FINOPTI_PORT, FINOPTI_MESH_URL (the gateway, the only address it knows), FINOPTI_HOME.
FROM python:3.11.13-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/finopti
COPY pyproject.toml ./
COPY src ./src
# A non-root user owns only its state directory and /pki (the compose `pki` volume is created from it).
RUN pip install . \
 && useradd --system --uid 10001 --user-group --create-home --home-dir /home/finopti finopti \
 && mkdir -p /pki /home/finopti/state \
 && chown finopti:finopti /pki /home/finopti/state

USER finopti
ENV FINOPTI_HOME=/home/finopti/state
EXPOSE 8443
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-m", "finopti.deploy.healthcheck"]
ENTRYPOINT ["python", "-m", "finopti.services.runner"]
