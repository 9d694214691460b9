# Two images from one build. The default target is the operator, with the [operator]
# extra; `--target sdk` is a base for agents with the SDK alone (no kopf, no Kubernetes
# client: docs/architecture.md, "Packaging").
#   docker build -t agent-mesh:0.1.0 .
#   docker build --target sdk -t agent-mesh-sdk:0.1.0 .   # then: FROM agent-mesh-sdk:0.1.0
# PYTHON_IMAGE is the base of every stage: any image with python3 >= 3.11 and pip. The
# local cluster builds this file offline on a Debian base of its own (docs/devcluster.md).
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
# Where pip finds packages: the package index by default; an offline build passes
# PIP_NO_INDEX=1 and PIP_FIND_LINKS=<a directory of wheels it mounts>.
ARG PIP_NO_INDEX
ARG PIP_FIND_LINKS
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
# package data behind operator/agent_mesh/{examples,samples} (links to these folders)
COPY examples ./examples
COPY config/samples ./config/samples
RUN pip wheel --no-cache-dir --wheel-dir /wheels '.[operator]'

FROM ${PYTHON_IMAGE} AS sdk
RUN useradd --uid 65532 --no-create-home --shell /usr/sbin/nologin mesh
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels agent-mesh && rm -rf /wheels
USER 65532:65532
# 8080: the agent's endpoint (tasks, messages, streams, probes, /metrics)
EXPOSE 8080

FROM ${PYTHON_IMAGE} AS operator
RUN useradd --uid 65532 --no-create-home --shell /usr/sbin/nologin mesh
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels 'agent-mesh[operator]' \
    && rm -rf /wheels
USER 65532:65532
# 8090: mesh API; 8080: liveness; 9443: admission webhooks
EXPOSE 8090 8080 9443
ENTRYPOINT ["agent-mesh", "operator"]
