# A local stand-in for the public redis image: Debian's redis-server, run as `redis`,
# its data in /data (the compose file passes --dir /data).
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN install -d -o redis -g redis /data
VOLUME ["/data"]
WORKDIR /data
USER redis
EXPOSE 6379
CMD ["redis-server", "--protected-mode", "no", "--dir", "/data"]
