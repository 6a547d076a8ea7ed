# A local stand-in for the public postgres image (Debian's PostgreSQL 15): the same
# environment variables (POSTGRES_USER, POSTGRES_PASSWORD or POSTGRES_PASSWORD_FILE,
# POSTGRES_DB), data in /var/lib/postgresql/data, `pg_isready` on the PATH.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN set -eu; bin=$(ls -d /usr/lib/postgresql/*/bin | tail -1); ln -s "$bin" /usr/lib/postgresql/bin; \
    install -d -o postgres -g postgres -m 0700 /var/lib/postgresql/data; \
    install -d -o postgres -g postgres /var/run/postgresql
COPY postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint
ENV PATH=/usr/lib/postgresql/bin:$PATH PGDATA=/var/lib/postgresql/data
VOLUME ["/var/lib/postgresql/data"]
USER postgres
EXPOSE 5432
STOPSIGNAL SIGINT
ENTRYPOINT ["sh", "/usr/local/bin/postgres-entrypoint"]
CMD ["postgres"]
