#!/bin/bash
# Entrypoint of compose's rabbitmq: the image's own server, then a user of least privilege
# per service (shared/broker.py: permissions), created or updated at every start:
# fetcher, trainer, evaluator (consume their own queue and its dead letters, publish to
# the exchange) and cli (publish only), with RABBITMQ_<NAME>_PASSWORD. None may declare
# anything: the one-shot `migrate` declares the exchanges and queues as `chouette`.
# Passwords reach rabbitmqctl on its standard input, never on a command line.
set -euo pipefail

docker-entrypoint.sh rabbitmq-server &
server=$!
trap 'kill -TERM "$server"; wait "$server"; exit $?' TERM INT

until rabbitmqctl -q await_startup >/dev/null 2>&1; do
    kill -0 "$server" 2>/dev/null || { wait "$server"; exit $?; }
    sleep 2
done

ns=$(printf '%s' "${BROKER_NAMESPACE:-chouette}" | sed 's/[][\.^$*+?(){}|]/\\&/g')
for user in fetcher trainer evaluator cli; do
    var="RABBITMQ_${user^^}_PASSWORD"
    password=${!var:?set $var}
    if rabbitmqctl -q list_users --no-table-headers | cut -f1 | grep -qx "$user"; then
        printf '%s' "$password" | rabbitmqctl -q change_password "$user" >/dev/null
    else
        printf '%s' "$password" | rabbitmqctl -q add_user "$user" >/dev/null
    fi
    read_queues="^${ns}\\.${user}(\\.dead)?\$"
    [ "$user" = cli ] && read_queues='^$'
    rabbitmqctl -q set_permissions -p / "$user" '^$' "^${ns}\$" "$read_queues" >/dev/null
done
echo "rabbitmq: users fetcher, trainer, evaluator, cli ready"
wait "$server"
