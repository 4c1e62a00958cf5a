# Build with the same install script and build commands as CI (scripts/dev).
FROM debian:bookworm AS build
WORKDIR /src
COPY . .
RUN bash scripts/install-deps.sh \
 && cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DTOLLGATE_TESTS=OFF -DTOLLGATE_BENCH=OFF \
 && cmake --build build --target tollgate

FROM debian:bookworm-slim
# What the binary loads: the install script's runtime list (test/dockerfile_runtime_test.sh
# checks it against the binary's libraries).
COPY scripts/install-deps.sh /tmp/install-deps.sh
RUN bash /tmp/install-deps.sh --runtime && rm /tmp/install-deps.sh
COPY --from=build /src/build/tollgate /usr/local/bin/tollgate
USER 65532:65532
ENTRYPOINT ["tollgate"]
# In a pod: the in-cluster configuration (manifests/deployment.yaml). Elsewhere, mount a
# directory of manifests and run: run --manifests /path --listen 0.0.0.0:8080
CMD ["run", "--listen", "0.0.0.0:8080"]
