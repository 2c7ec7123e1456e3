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
KAFKA_HEAP=${KAFKA_HEAP:-384m}
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

kafka_config() {
    local dir=$DEVSTACK_DIR/kafka
    mkdir -p "$dir/data" "$dir/logs"
    cat >"$dir/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
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
        java "${java_opts[@]}" kafka.tools.StorageTool format -t "$cluster_id" -c "$dir/server.properties" -g \
            >"$dir/logs/format.log" 2>&1 || { tail_log "$dir/logs/format.log"; die "kafka storage format failed"; }
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
    say "kafka up on 127.0.0.1:$KAFKA_PORT (pid $(cat "$pidfile"))"
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
