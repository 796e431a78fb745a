# lrtune image: workers, the one-shot study creator and the dashboard (see docker-compose.yml).
#
# torch comes first, from the PyTorch wheel index chosen by TORCH_INDEX_URL: the default is
# a CUDA 12.6 build for GPU workers (the host needs an NVIDIA driver >= 560 and the NVIDIA
# Container Toolkit). For a CPU-only image (a few hundred MB instead of several GB):
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu -t lrtune .
FROM python:3.11-slim

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126
ARG TORCH_SPEC="torch>=2.4"

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python -m pip install --index-url "$TORCH_INDEX_URL" "$TORCH_SPEC"

# The project (its other dependencies come from PyPI; torch is already satisfied).
WORKDIR /opt/lrtune
COPY pyproject.toml README.md ./
COPY lrtune ./lrtune
COPY studies ./studies
RUN python -m pip install . \
    && useradd --create-home --uid 1000 lrtune \
    && mkdir -p /artifacts && chown lrtune /artifacts

USER lrtune
# Study specs are at studies/*.toml relative to here; artifacts (range-test plots) go to
# the shared /artifacts volume.
WORKDIR /opt/lrtune
ENV LRTUNE_ARTIFACTS=/artifacts
CMD ["lrtune", "--help"]
