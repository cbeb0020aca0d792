# The image that profiles/gcp and profiles/gke run every job in: the pinned stack plus this package.
# Build and push (README, "Run on Google Cloud"):
#   docker build -t us-central1-docker.pkg.dev/YOUR-PROJECT/iclbench/iclbench:0.1.0 .
#   docker push us-central1-docker.pkg.dev/YOUR-PROJECT/iclbench/iclbench:0.1.0
# torch comes from PyTorch's CUDA 12.8 index (same version as pyproject.toml), so the image runs
# on the GPU machines of the cloud profiles and on CPU alike.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /opt/iclbench

RUN pip install --index-url https://download.pytorch.org/whl/cu128 torch==2.13.0
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install '.[cloud]'
COPY Snakefile ./
COPY workflow ./workflow
COPY config ./config
COPY envs ./envs
