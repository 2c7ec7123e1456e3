# The feed (and the control API it serves). Build: docker build -t alphapanda .
# The hot path is a Rust extension: build the wheel with cargo in a throw-away stage.
FROM python:3.11-slim AS build
RUN apt-get update && apt-get install -y --no-install-recommends curl gcc libc6-dev \
    && curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
ENV PATH=/root/.cargo/bin:$PATH PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml constraints.txt README.md Cargo.toml Cargo.lock ./
COPY native ./native
COPY src ./src
RUN pip wheel --no-deps -w /wheels .

FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY --from=build /wheels /wheels
COPY data ./data
RUN pip install -c constraints.txt /wheels/*.whl && rm -rf /wheels \
    && useradd --system --uid 10001 --home /app alphapanda \
    && mkdir -p /var/lib/alphapanda/spool && chown -R alphapanda /var/lib/alphapanda
USER alphapanda
# The disk spool must survive a container restart: mount a volume here.
ENV ALPHAPANDA_FEED__SPOOL_DIR=/var/lib/alphapanda/spool
EXPOSE 18080
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:18080/health', timeout=2).status == 200 else 1)"
ENTRYPOINT ["alphapanda"]
CMD ["feed"]
