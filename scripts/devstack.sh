#!/usr/bin/env bash
# Local stack without Docker: Apache Kafka (KRaft, single node), Redis and PostgreSQL
# on loopback, with data, logs and pid files under $DEVSTACK_DIR (default .devstack/).
#
#   scripts/devstack.sh up [kafka|redis|postgres ...]     start (idempotent)
#   scripts/devstack.sh down [kafka|redis|postgres ...]   stop (idempotent), leaves no process behind
#   scripts/devstack.sh status                            one line per service
#   scripts/devstack.sh kafka-jars                        resolve the broker's jars only
#
# Every port and folder can be overridden from the environment, so tests can start a
# private instance (e.g. a broker they are allowed to SIGKILL) beside the shared one.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEVSTACK_DIR=${DEVSTACK_DIR:-$ROOT/.devstack}
CACHE_DIR=${ALPHAPANDA_CACHE_DIR:-$HOME/.cache/alphapanda}
KAFKA_VERSION=${KAFKA_VERSION:-4.1.1}
LOG4J_VERSION=${LOG4J_VERSION:-2.24.3}
KAFKA_PORT=${KAFKA_PORT:-19092}
KAFKA_CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-19093}
# Every partition costs the broker heap: one run of the test suite creates about 3,000
# (topics are per test); with 384m the broker ran out of memory after about 10,000, and
# long before that its collections slowed topic creation down to seconds.
KAFKA_HEAP=${KAFKA_HEAP:-768m}
# Opt-in second listener, SASL_SSL with SCRAM-SHA-512, as managed Kafka services require
# (off by default so the usual start-up stays fast). Its CA certificate is written to
# $DEVSTACK_DIR/kafka/tls/ca.pem (point ALPHAPANDA_KAFKA__SSL_CA_LOCATION at it).
KAFKA_SASL_PORT=${KAFKA_SASL_PORT:-}
KAFKA_SASL_USER=${KAFKA_SASL_USER:-alphapanda}
KAFKA_SASL_PASSWORD=${KAFKA_SASL_PASSWORD:-dev-kafka-password}
REDIS_PORT=${REDIS_PORT:-16379}
PG_PORT=${PG_PORT:-15432}
PG_USER=alphapanda
PG_DB=alphapanda
WAIT_SECONDS=${WAIT_SECONDS:-90}

KAFKA_LIB=$CACHE_DIR/kafka-$KAFKA_VERSION/lib

say() { printf '[devstack] %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

is_root() { [ "$(id -u)" -eq 0 ]; }

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

tail_log() { [ -f "$1" ] && { say "last lines of $1:"; tail -n 40 "$1" >&2; } || true; }

# --- system packages -------------------------------------------------------------

pg_bindir() {
    local d
    for d in /usr/lib/postgresql/*/bin; do
        [ -x "$d/initdb" ] && { echo "$d"; return 0; }
    done
    return 1
}

java_ok() {
    command -v java >/dev/null 2>&1 || return 1
    local v
    v=$(java -version 2>&1 | awk -F'"' '/version/ {print $2; exit}')
    [ "${v%%.*}" -ge 17 ] 2>/dev/null
}

ensure_packages() {
    local want=() missing=()
    for svc in "$@"; do
        case $svc in
            kafka)
                java_ok || { want+=(openjdk-17-jre-headless); missing+=("a JDK 17+ (java)"); }
                command -v mvn >/dev/null 2>&1 || { want+=(maven); missing+=(maven); } ;;
            redis)
                command -v redis-server >/dev/null 2>&1 || { want+=(redis-server); missing+=(redis-server); } ;;
            postgres)
                pg_bindir >/dev/null || { want+=(postgresql); missing+=(postgresql); } ;;
        esac
    done
    [ ${#want[@]} -eq 0 ] && return 0
    if is_root && command -v apt-get >/dev/null 2>&1; then
        say "installing ${want[*]} with apt-get"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >/dev/null
        apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
    else
        die "missing: ${missing[*]}. Install them (Debian/Ubuntu: sudo apt-get install ${want[*]}) and run again."
    fi
}

# --- Kafka -------------------------------------------------------------------------

kafka_jars() {
    if [ -f "$KAFKA_LIB/.complete" ]; then return 0; fi
    say "resolving org.apache.kafka:kafka_2.13:$KAFKA_VERSION from Maven Central into $KAFKA_LIB"
    local work
    work=$(mktemp -d)
    cat >"$work/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.alphapanda</groupId><artifactId>kafka-broker-jars</artifactId><version>1</version>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$KAFKA_VERSION</version></dependency>
    <!-- The published POM carries slf4j-api 1.7 but no binding: without one the broker logs nothing. -->
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>$LOG4J_VERSION</version></dependency>
  </dependencies>
</project>
EOF
    rm -rf "$KAFKA_LIB"
    mkdir -p "$KAFKA_LIB"
    if ! mvn -q -B -f "$work/pom.xml" -Dmaven.repo.local="$CACHE_DIR/m2" \
        dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$KAFKA_LIB" >"$work/mvn.log" 2>&1; then
        tail -n 30 "$work/mvn.log" >&2
        die "could not resolve the Kafka jars with Maven"
    fi
    touch "$KAFKA_LIB/.complete"
    rm -rf "$work"
}

# A CA and a broker certificate for 127.0.0.1/localhost, as PEM files Kafka reads
# directly (ssl.keystore.type=PEM): no JKS, no keytool.
kafka_tls() {
    local tls=$DEVSTACK_DIR/kafka/tls
    [ -f "$tls/broker.pem" ] && [ -f "$tls/ca.pem" ] && return 0
    command -v openssl >/dev/null 2>&1 || die "openssl is needed for the SASL_SSL listener"
    mkdir -p "$tls"
    openssl req -x509 -newkey rsa:2048 -nodes -days 825 -subj "/CN=alphapanda dev CA" \
        -keyout "$tls/ca.key" -out "$tls/ca.pem" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
        -keyout "$tls/broker.key" -out "$tls/broker.csr" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$tls/san.ext"
    openssl x509 -req -in "$tls/broker.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" \
        -CAcreateserial -days 825 -extfile "$tls/san.ext" -out "$tls/broker.crt" 2>/dev/null
    # PKCS#8 key then the certificate chain, the layout Kafka's PEM keystore expects.
    openssl pkcs8 -topk8 -nocrypt -in "$tls/broker.key" -out "$tls/broker.key.pk8"
    cat "$tls/broker.key.pk8" "$tls/broker.crt" "$tls/ca.pem" >"$tls/broker.pem"
    chmod 600 "$tls"/*.key "$tls"/*.pk8 "$tls/broker.pem"
}

kafka_config() {
    local dir=$DEVSTACK_DIR/kafka
    mkdir -p "$dir/data" "$dir/logs"
    local listeners="PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT"
    local advertised="PLAINTEXT://127.0.0.1:$KAFKA_PORT"
    local protocols="CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
    if [ -n "$KAFKA_SASL_PORT" ]; then
        kafka_tls
        listeners="$listeners,SASL_SSL://127.0.0.1:$KAFKA_SASL_PORT"
        advertised="$advertised,SASL_SSL://127.0.0.1:$KAFKA_SASL_PORT"
        protocols="$protocols,SASL_SSL:SASL_SSL"
    fi
    cat >"$dir/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=$listeners
advertised.listeners=$advertised
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=$protocols
log.dirs=$dir/data
num.partitions=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.retention.hours=24
log.segment.bytes=67108864
EOF
    if [ -n "$KAFKA_SASL_PORT" ]; then
        cat >>"$dir/server.properties" <<EOF
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.ssl.keystore.type=PEM
listener.name.sasl_ssl.ssl.keystore.location=$dir/tls/broker.pem
EOF
    fi
    cat >"$dir/log4j2.properties" <<EOF
status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = $dir/logs/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
logger.controller.name = org.apache.kafka.controller
logger.controller.level = INFO
EOF
}

kafka_up() {
    local dir=$DEVSTACK_DIR/kafka pidfile=$DEVSTACK_DIR/kafka.pid
    if pid_alive "$pidfile"; then say "kafka already running (pid $(cat "$pidfile")) on 127.0.0.1:$KAFKA_PORT"; return 0; fi
    if port_open "$KAFKA_PORT"; then die "port $KAFKA_PORT is taken by another process; stop it or set KAFKA_PORT"; fi
    kafka_jars
    kafka_config
    local java_opts=(-server "-Xms$KAFKA_HEAP" "-Xmx$KAFKA_HEAP" -XX:+UseG1GC -XX:MaxGCPauseMillis=20
        -Djava.awt.headless=true "-Dlog4j2.configurationFile=$dir/log4j2.properties"
        "-Dkafka.logs.dir=$dir/logs" -cp "$KAFKA_LIB/*")
    if [ ! -f "$dir/data/meta.properties" ]; then
        local cluster_id
        cluster_id=$(java "${java_opts[@]}" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)
        local scram=()
        # The SCRAM user goes into the metadata log when the storage is formatted.
        [ -n "$KAFKA_SASL_PORT" ] && scram=(--add-scram "SCRAM-SHA-512=[name=$KAFKA_SASL_USER,password=$KAFKA_SASL_PASSWORD]")
        java "${java_opts[@]}" kafka.tools.StorageTool format -t "$cluster_id" -c "$dir/server.properties" -g \
            "${scram[@]}" >"$dir/logs/format.log" 2>&1 || { tail_log "$dir/logs/format.log"; die "kafka storage format failed"; }
    elif [ -n "$KAFKA_SASL_PORT" ]; then
        kafka_scram_user_later=1
    fi
    nohup java "${java_opts[@]}" kafka.Kafka "$dir/server.properties" >"$dir/logs/stdout.log" 2>&1 </dev/null &
    echo $! >"$pidfile"
    local deadline=$((SECONDS + WAIT_SECONDS))
    until port_open "$KAFKA_PORT" && grep -q "Kafka Server started" "$dir/logs/server.log" 2>/dev/null; do
        if ! pid_alive "$pidfile"; then
            tail_log "$dir/logs/stdout.log"; tail_log "$dir/logs/server.log"; rm -f "$pidfile"
            die "kafka exited during start-up"
        fi
        if [ $SECONDS -ge $deadline ]; then
            tail_log "$dir/logs/server.log"; die "kafka did not answer on 127.0.0.1:$KAFKA_PORT within ${WAIT_SECONDS}s"
        fi
        sleep 0.5
    done
    if [ "${kafka_scram_user_later:-0}" = 1 ]; then
        # Storage formatted earlier without the user: add it through the admin API.
        java "${java_opts[@]}" kafka.admin.ConfigCommand --bootstrap-server "127.0.0.1:$KAFKA_PORT" \
            --alter --entity-type users --entity-name "$KAFKA_SASL_USER" \
            --add-config "SCRAM-SHA-512=[password=$KAFKA_SASL_PASSWORD]" >"$dir/logs/scram.log" 2>&1 \
            || { tail_log "$dir/logs/scram.log"; die "could not create the SCRAM user"; }
    fi
    say "kafka up on 127.0.0.1:$KAFKA_PORT (pid $(cat "$pidfile"))"
    if [ -n "$KAFKA_SASL_PORT" ]; then
        say "kafka SASL_SSL (SCRAM-SHA-512, user $KAFKA_SASL_USER) on 127.0.0.1:$KAFKA_SASL_PORT; CA: $dir/tls/ca.pem"
    fi
}

# --- Redis -------------------------------------------------------------------------

redis_up() {
    local dir=$DEVSTACK_DIR/redis pidfile=$DEVSTACK_DIR/redis.pid
    if pid_alive "$pidfile"; then say "redis already running (pid $(cat "$pidfile")) on 127.0.0.1:$REDIS_PORT"; return 0; fi
    if port_open "$REDIS_PORT"; then die "port $REDIS_PORT is taken by another process; stop it or set REDIS_PORT"; fi
    mkdir -p "$dir"
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes \
        --pidfile "$pidfile" --logfile "$dir/redis.log" --dir "$dir" \
        || { tail_log "$dir/redis.log"; die "redis-server failed to start"; }
    local deadline=$((SECONDS + WAIT_SECONDS))
    until [ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" = "PONG" ]; do
        [ $SECONDS -ge $deadline ] && { tail_log "$dir/redis.log"; die "redis did not answer on 127.0.0.1:$REDIS_PORT"; }
        sleep 0.2
    done
    say "redis up on 127.0.0.1:$REDIS_PORT (pid $(cat "$pidfile"))"
}

# --- PostgreSQL --------------------------------------------------------------------

# initdb refuses to run as root: as root, the cluster belongs to the postgres user.
as_pg() { if is_root; then runuser -u postgres -- "$@"; else "$@"; fi; }

pg_datadir() {
    local dir=$DEVSTACK_DIR/postgres
    if is_root && [ ! -e "$dir" ]; then
        # The postgres user must reach the data folder; a checkout under /root cannot be.
        mkdir -p "$DEVSTACK_DIR"
        if ! runuser -u postgres -- test -x "$DEVSTACK_DIR" 2>/dev/null; then
            local alt
            alt=/var/tmp/alphapanda-pg-$(echo -n "$DEVSTACK_DIR" | md5sum | cut -c1-12)
            mkdir -p "$alt" && chown postgres: "$alt" && chmod 700 "$alt"
            ln -s "$alt" "$dir"
        fi
    fi
    echo "$dir"
}

postgres_up() {
    local bindir dir log pidfile=$DEVSTACK_DIR/postgres.pid
    bindir=$(pg_bindir) || die "PostgreSQL server binaries not found"
    # Resolved, because the postgres user may not be able to traverse $DEVSTACK_DIR itself.
    dir=$(readlink -f "$(pg_datadir)")
    log=$dir.log
    if [ -f "$dir/postmaster.pid" ] && as_pg "$bindir/pg_ctl" -D "$dir" status >/dev/null 2>&1; then
        head -n 1 "$dir/postmaster.pid" >"$pidfile"
        say "postgres already running (pid $(cat "$pidfile")) on 127.0.0.1:$PG_PORT"; return 0
    fi
    if port_open "$PG_PORT"; then die "port $PG_PORT is taken by another process; stop it or set PG_PORT"; fi
    mkdir -p "$dir"
    touch "$log"
    if is_root; then chown postgres: "$dir" "$log"; chmod 700 "$dir"; fi
    [ "$log" = "$DEVSTACK_DIR/postgres.log" ] || ln -sfn "$log" "$DEVSTACK_DIR/postgres.log"
    if [ ! -f "$dir/PG_VERSION" ]; then
        as_pg "$bindir/initdb" -D "$dir" -U "$PG_USER" --auth=trust -E UTF8 >"$DEVSTACK_DIR/initdb.log" 2>&1 \
            || { tail_log "$DEVSTACK_DIR/initdb.log"; die "initdb failed"; }
    fi
    as_pg "$bindir/pg_ctl" -D "$dir" -l "$log" -w -t "$WAIT_SECONDS" \
        -o "-p $PG_PORT -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" start >/dev/null \
        || { tail_log "$log"; die "postgres did not start on 127.0.0.1:$PG_PORT"; }
    head -n 1 "$dir/postmaster.pid" >"$pidfile"
    if ! psql -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" -d postgres -tAc \
        "SELECT 1 FROM pg_database WHERE datname = '$PG_DB'" | grep -q 1; then
        psql -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" -d postgres -qc "CREATE DATABASE $PG_DB" >/dev/null
    fi
    say "postgres up on 127.0.0.1:$PG_PORT (pid $(cat "$pidfile")), database $PG_DB"
}

# --- stop ----------------------------------------------------------------------------

stop_pid() {  # stop_pid NAME PIDFILE: TERM, wait, then KILL; removes the pid file.
    local name=$1 pidfile=$2 pid
    [ -f "$pidfile" ] || return 0
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
        kill -CONT "$pid" 2>/dev/null || true   # a SIGSTOPped process cannot act on TERM
        kill -TERM "$pid" 2>/dev/null || true
        local deadline=$((SECONDS + 30))
        while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
        say "$name stopped"
    fi
    rm -f "$pidfile"
}

postgres_down() {
    local bindir dir
    dir=$(readlink -f "$DEVSTACK_DIR/postgres")
    bindir=$(pg_bindir) || { rm -f "$DEVSTACK_DIR/postgres.pid"; return 0; }
    if [ -f "$dir/postmaster.pid" ]; then
        as_pg "$bindir/pg_ctl" -D "$dir" -m fast -w stop >/dev/null 2>&1 || true
    fi
    stop_pid postgres "$DEVSTACK_DIR/postgres.pid"
}

status() {
    local name port pidfile
    for name in kafka redis postgres; do
        case $name in kafka) port=$KAFKA_PORT ;; redis) port=$REDIS_PORT ;; postgres) port=$PG_PORT ;; esac
        pidfile=$DEVSTACK_DIR/$name.pid
        if pid_alive "$pidfile"; then
            printf '%-9s up    127.0.0.1:%s pid %s\n' "$name" "$port" "$(cat "$pidfile")"
        else
            printf '%-9s down  127.0.0.1:%s\n' "$name" "$port"
        fi
    done
}

services() { if [ $# -eq 0 ]; then echo kafka redis postgres; else echo "$@"; fi; }

cmd=${1:-}
[ $# -gt 0 ] && shift
mkdir -p "$DEVSTACK_DIR"
case $cmd in
    up)
        # shellcheck disable=SC2046
        set -- $(services "$@")
        ensure_packages "$@"
        for svc in "$@"; do
            case $svc in
                kafka) kafka_up ;; redis) redis_up ;; postgres) postgres_up ;;
                *) die "unknown service $svc (kafka, redis, postgres)" ;;
            esac
        done ;;
    down)
        # shellcheck disable=SC2046
        for svc in $(services "$@"); do
            case $svc in
                kafka) stop_pid kafka "$DEVSTACK_DIR/kafka.pid" ;;
                redis) stop_pid redis "$DEVSTACK_DIR/redis.pid" ;;
                postgres) postgres_down ;;
                *) die "unknown service $svc (kafka, redis, postgres)" ;;
            esac
        done ;;
    status) status ;;
    kafka-jars) ensure_packages kafka; kafka_jars; echo "$KAFKA_LIB" ;;
    *) echo "usage: $0 {up|down|status|kafka-jars} [kafka|redis|postgres ...]" >&2; exit 2 ;;
esac
