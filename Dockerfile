# The operator image; agents built with the SDK can start FROM it too (the SDK is in the
# same package). Build: docker build -t agent-mesh:0.1.0 .
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
# package data behind operator/agent_mesh/{examples,samples} (links to these folders)
COPY examples ./examples
COPY config/samples ./config/samples
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --uid 65532 --no-create-home --shell /usr/sbin/nologin mesh
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER 65532:65532
# 8090: mesh API; 8080: liveness; 9443: admission webhooks
EXPOSE 8090 8080 9443
ENTRYPOINT ["agent-mesh", "operator"]
