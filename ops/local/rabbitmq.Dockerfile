# RabbitMQ built without a registry, for `make compose-test`: Debian's
# rabbitmq-server on the local base image, with the entry point name the
# upstream image has (ops/rabbitmq/init.sh calls `docker-entrypoint.sh
# rabbitmq-server`). Production uses the upstream image (docker-compose.yml).
ARG BASE=pretext/debian:bookworm
FROM ${BASE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends rabbitmq-server \
 && rm -rf /var/lib/apt/lists/* \
 && printf '#!/bin/sh\nexec "$@"\n' > /usr/local/bin/docker-entrypoint.sh \
 && chmod 755 /usr/local/bin/docker-entrypoint.sh
ENV PATH=/usr/lib/rabbitmq/bin:/usr/sbin:/usr/bin:/sbin:/bin:/usr/local/bin
EXPOSE 5672 15672 15692
CMD ["docker-entrypoint.sh", "rabbitmq-server"]
