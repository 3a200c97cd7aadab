# trustgate webhook and controller image. The chart runs `trustgate serve` or `trustgate controller` from it.
#
# Both bases must carry the same python3 at the same path: the venv made in the first stage runs on the second.
# The defaults suit a machine that reaches Docker Hub; scripts/build-image.sh (`make image`) points them at bases it
# makes from Debian packages (python3, gpg and CA certificates already in, no apt), where `make image` works offline
# of any image registry.
ARG BUILD_BASE=python:3.11-slim-bookworm
ARG RUNTIME_BASE=python:3.11-slim-bookworm

FROM ${BUILD_BASE} AS build
# strip(1) only: the wheels' extension modules ship with debug information, 25 MB of the venv.
RUN command -v strip >/dev/null \
 || { apt-get update && apt-get install -y --no-install-recommends binutils && rm -rf /var/lib/apt/lists/*; }
WORKDIR /src
COPY pyproject.toml README.md ./
COPY webhook ./webhook
COPY controller ./controller
# What the running image never uses goes: the installers, kubernetes' asyncio twin of its client (trustgate uses
# the synchronous one), the packages' own tests. Bytecode is compiled against content hashes (a copied file's time
# does not make it stale), for all but kubernetes' 845 generated model classes: their 13 MB of bytecode would save
# about 0.25 s when the controller or the in-cluster webhook starts, and take the image over 200 MB.
RUN python3 -m venv /opt/trustgate \
 && /opt/trustgate/bin/pip install --no-cache-dir --no-compile . \
 && /opt/trustgate/bin/pip uninstall --yes --quiet pip setuptools \
 && site=$(/opt/trustgate/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))') \
 && rm -r "$site/kubernetes/aio" \
 && find "$site" -depth -type d \( -name tests -o -name __pycache__ \) -exec rm -r {} + \
 && find "$site" -name '*.so' -exec strip --strip-unneeded {} + \
 && /opt/trustgate/bin/python -m compileall -q -j 0 --invalidation-mode unchecked-hash \
      -x '/kubernetes/client/models/' "$site"

FROM ${RUNTIME_BASE}
# gpg verifies simple signatures in a throw-away home per TrustStore: it imports public keys and verifies, so the
# gpg binary is all it needs (no agent, dirmngr or pinentry from the gnupg metapackage).
RUN command -v gpg >/dev/null \
 || { apt-get update && apt-get install -y --no-install-recommends gpg && rm -rf /var/lib/apt/lists/*; }
COPY --from=build /opt/trustgate /opt/trustgate
ENV PATH=/opt/trustgate/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# A fixed non-root UID, so that pod security "restricted" (runAsNonRoot) can check it without a name lookup.
USER 65532:65532
EXPOSE 8443
ENTRYPOINT ["trustgate"]
CMD ["serve", "--config", "/etc/trustgate/config", "--host", "0.0.0.0", "--port", "8443"]
