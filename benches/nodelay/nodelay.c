/*
 * LD_PRELOAD shim for the benchmarks' fair rows: sets TCP_NODELAY on every
 * TCP socket just before connect(), for contenders (lettre, mail-send) that
 * leave Nagle's algorithm on and offer no option to turn it off. Nothing
 * else changes: same binary, same code path, same socket.
 *
 * Built by scripts/bench.sh:
 *   cc -shared -fPIC -O2 -o target/nodelay.so benches/nodelay/nodelay.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

typedef int (*connect_fn)(int, const struct sockaddr *, socklen_t);

int connect(int fd, const struct sockaddr *addr, socklen_t len) {
    static connect_fn real_connect;
    if (!real_connect) {
        real_connect = (connect_fn)dlsym(RTLD_NEXT, "connect");
    }
    if (addr && (addr->sa_family == AF_INET || addr->sa_family == AF_INET6)) {
        int type = 0;
        socklen_t type_len = sizeof type;
        if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &type_len) == 0 && type == SOCK_STREAM) {
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        }
    }
    return real_connect(fd, addr, len);
}
