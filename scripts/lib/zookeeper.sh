# Sourced by the benchmark scripts: finds the Apache ZooKeeper to compare against.
#
# By default that is Debian's `zookeeper` package, installed here if missing (apt-get; needs
# root). On a machine without it or without a network, set ZK_CLASSPATH to the jars and the
# directory holding log4j.properties (java's -cp syntax, `dir/*` allowed), `java` on PATH, and
# optionally ZK_VERSION to the version to print.
#
# Sets ZK_CLASSPATH, ZK_VERSION, ZK_SOURCE (how the tables describe where it came from) and
# ZK_JAVA (the java runtime it runs on, as `java -version` names it).
# Needs a `die` function from the caller.
zookeeper_setup() {
    if [ -n "${ZK_CLASSPATH:-}" ]; then
        ZK_VERSION=${ZK_VERSION:-unknown}
        ZK_SOURCE="jars given in ZK_CLASSPATH"
    else
        if ! dpkg -s zookeeper >/dev/null 2>&1; then
            [ "$(id -u)" = 0 ] || die "Debian's zookeeper package is missing and installing it needs root"
            echo "installing Debian's zookeeper package" >&2
            apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq zookeeper >/dev/null
        fi
        ZK_VERSION=$(dpkg-query -W -f='${Version}' zookeeper 2>/dev/null || echo unknown)
        ZK_CLASSPATH="/etc/zookeeper/conf:$(ls /usr/share/java/*.jar | tr '\n' ':')"
        ZK_SOURCE="Debian package"
    fi
    command -v java >/dev/null || die "java is missing (Debian's zookeeper package brings it; with ZK_CLASSPATH, put it on PATH)"
    # `java -version` reports on stderr; the first line names the runtime.
    ZK_JAVA=$(java -version 2>&1 | head -n 1)
}
