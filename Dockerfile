# Build with the same install script and build commands as CI (scripts/dev).
FROM debian:bookworm AS build
WORKDIR /src
COPY . .
RUN bash scripts/install-deps.sh \
 && cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DTOLLGATE_TESTS=OFF -DTOLLGATE_BENCH=OFF \
 && cmake --build build --target tollgate

FROM debian:bookworm-slim
# Every library build/tollgate loads (test/dockerfile_runtime_test.sh checks this list).
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends libyaml-0-2 libsimdjson14 libssl3 libprometheus-cpp-core1.0 libgrpc++1.51 libprotobuf32 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/build/tollgate /usr/local/bin/tollgate
COPY --from=build /src/examples /usr/share/tollgate/examples
USER 65532:65532
ENTRYPOINT ["tollgate"]
# In a pod: in-cluster config. Elsewhere: run --manifests /usr/share/tollgate/examples/seed
CMD ["run"]
